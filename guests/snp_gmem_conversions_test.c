// SPDX-License-Identifier: GPL-2.0
/*
 * snp_gmem_conversions_test - the SEV-SNP counterpart of
 * gmem_misaligned_conversions_test: private<->shared conversions, done the
 * way an SNP guest does them, on guest_memfd memslots whose guest_memfd
 * offset agrees (0) or disagrees (4K, 1M, 2M-4K) with the gpa modulo 2M.
 *
 * Part of snp-harness; built inside tools/testing/selftests/kvm of the kernel
 * tree under test.  The SNP VM creation and launch (our own, on the uAPI,
 * for the 6.12 selftests library) and the guest's GHCB MSR / PVALIDATE
 * primitives are in snp_util.h.  Memslot 0 (the library's code/data/
 * page-table slot) is guest_memfd backed, because an SNP guest's code and
 * page tables must be private.
 *
 * Setup, per gmem offset: one SNP VM, a 6M data memslot at a 2M-aligned gpa
 * (4G) bound at that offset into an 8M guest_memfd.  The guest maps the data
 * slot twice: identity-mapped with the C-bit clear (the shared view) and at
 * PRIV_GVA with the C-bit set (the private view); it uses whichever view
 * matches the page's current state.
 *
 * Guest<->host channel.  An SNP guest cannot use the library's ucall: port
 * I/O, CPUID and intercepted MSRs raise #VC, and there is no #VC handler.
 * The guest therefore uses only the GHCB MSR protocol:
 *  - conversions: Page State Change requests (GHCB_MSR_PSC_REQ, one 4K page
 *    per request; KVM forwards each as a KVM_HC_MAP_GPA_RANGE exit, the host
 *    sets the memory attributes) plus PVALIDATE: rescind before making a
 *    page shared, validate after making it private;
 *  - host requests ("check your mapping", "punch the gmem", "next subtest",
 *    failure reports): the guest fills a mailbox page (MBOX_GPA, its own
 *    non-guest_memfd memslot, so never private) and
 *    rings a doorbell, a PSC request for DOORBELL_GPA, a gpa outside every
 *    memslot.  KVM forwards it to userspace like any PSC request; the host
 *    recognises the gpa, serves the mailbox and never touches attributes
 *    for it;
 *  - fatal errors: GHCB_MSR_TERM_REQ (KVM_SYSTEM_EVENT_SEV_TERM).
 *
 * Subtests, one per (offset, range, direction), e.g.
 * snp_offset_0x1000_range_2m_straddle_shared_to_private.  Ranges: 4k (the
 * page at a 2M gpa boundary), 2m (2M gpa-aligned), 2m_straddle (2M crossing
 * a 2M gpa boundary).  The "window" is the range plus one page each side.
 *  private_to_shared: window private (host attributes), gmem punched.  The
 *    guest validates the window (every page must be freshly validated, i.e.
 *    PVALIDATE updates the RMP), writes it privately; the host's shared
 *    mapping must not show it.  The guest rescinds + PSC-shares the range:
 *    it then reads the host's shared contents, its neighbours still hold
 *    the private data; guest writes to the shared range show in the host
 *    mapping.  Translation check on the (still private) neighbours.
 *  shared_to_private: window shared.  Guest writes it shared (host sees
 *    it), PSC-privates + validates the range: no page of the range may read
 *    as the shared contents through the private view; the neighbours still
 *    read shared; private writes never show in the host's shared mapping.
 *    Translation check on the range.
 *  Translation check: the host punches the gmem at (slot offset + gpa -
 *    slot base) for a private page; the guest must then find exactly that
 *    page fresh: PVALIDATE updates the RMP (CF clear) and the private data
 *    is gone, while an unpunched page keeps its data.  Under SNP fresh
 *    private memory is not zero to the guest (the host clears it in
 *    plaintext), so this replaces the SW_PROTECTED test's "reads zero".
 *  2M PVALIDATE: whenever a 2M-aligned 2M chunk is validated or rescinded,
 *    the guest tries a 2M PVALIDATE first and falls back to 4K on failure
 *    (SIZEMISMATCH when the RMP entry is 4K).  A successful 2M PVALIDATE
 *    means a 2M RMP entry; at a misaligned gmem offset the gmem index of a
 *    2M-aligned gfn is not 2M aligned, so no 2M folio can back it and a 2M
 *    entry there is a bug: the subtest fails.
 *
 * Huge guest_memfd folios (-H, with -f FLAGS for the creation flags a
 * series needs; kvm_caps_probe measures both).  Mainline 6.12 has only 4K
 * gmem folios, so by default the 2M outcome at offset 0 is only reported
 * ("# ... pvalidate 2M ok N").  With -H, one more subtest,
 * snp_offset_0x0_2m_rmp_entry_with_huge_folios, requires at least one 2M
 * PVALIDATE to succeed at offset 0 (a 2M RMP entry is possible there), while
 * the misaligned offsets still forbid it (impossible there).
 *
 * Skips (KSFT_SKIP, with the reason) without KVM_X86_SNP_VM in
 * KVM_CAP_VM_TYPES, without a usable /dev/sev, guest_memfd, memory
 * attributes or KVM_CAP_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/falloc.h>
#include <linux/kvm_para.h>
#include <linux/sizes.h>

#include "kselftest.h"
#include "test_util.h"
#include "kvm_util.h"
#include "processor.h"
#include "sparsebit.h"

#include "snp_util.h"

#define DATA_SLOT	10
#define DATA_GPA	((uint64_t)SZ_4G)	/* 2M aligned */
#define SLOT_SIZE	((uint64_t)SZ_4M + SZ_2M)
#define GMEM_SIZE	((uint64_t)SZ_8M)	/* > any offset + SLOT_SIZE */
#define PRIV_GVA	(DATA_GPA + SZ_1G)	/* C-bit view of the data slot */
#define SLOT0_PAGES	2048			/* 6.12 path: code, data, page tables, stack */
#define SLOT0_EXTRA_PAGES	512		/* library path: page tables of the two views, mailbox */
#define MBOX_SLOT	11
#define MBOX_GPA	(DATA_GPA + SZ_16M)	/* a non-gmem slot: always shared */
#define DOORBELL_GPA	SNPT_DOORBELL_GPA	/* in no memslot */

static const uint64_t gmem_offsets[] = { 0, PAGE_SIZE, SZ_1M, SZ_2M - PAGE_SIZE };

static const struct range_kind {
	const char *name;
	uint64_t start;	/* relative to DATA_GPA */
	uint64_t size;
} range_kinds[] = {
	{ "4k",          SZ_2M, PAGE_SIZE },
	{ "2m",          SZ_2M, SZ_2M },
	{ "2m_straddle", SZ_1M, SZ_2M },
};

#define NR_OFFSETS	ARRAY_SIZE(gmem_offsets)
#define NR_RANGES	ARRAY_SIZE(range_kinds)
#define NR_TESTS	(NR_OFFSETS * NR_RANGES * 2)

/* -f / -H, see the top comment */
static uint64_t gmem_create_flags;
static bool require_huge;
static uint64_t pv_2m_ok_at_offset_0;

enum {
	SYNC_NEXT = 0x1000,	/* guest finished a subtest, wants the next one */
	SYNC_HOST_CHECK,	/* gpa, size, pattern: host checks its mapping */
	SYNC_PUNCH,		/* gpa, size: host punches the gmem behind gpa */
	SYNC_FAIL,		/* step, gpa, expected, got */
	SYNC_DONE,
};

enum {
	STEP_INITIAL = 1,
	STEP_AFTER_FILL,
	STEP_CONVERTED,
	STEP_CONVERTED_NOT_SHARED,
	STEP_NEIGHBOUR_BEFORE,
	STEP_NEIGHBOUR_AFTER,
	STEP_PUNCHED,
	STEP_NOT_PUNCHED,
	STEP_PVALIDATE,
	STEP_PVALIDATE_NOUPDATE,
	STEP_PSC,
	STEP_2M_AT_MISALIGNED,
};

static const char *const step_names[] = {
	[STEP_INITIAL] = "initial contents",
	[STEP_AFTER_FILL] = "read back after write",
	[STEP_CONVERTED] = "converted range after conversion",
	[STEP_CONVERTED_NOT_SHARED] = "new private page reads as the shared contents (expected: anything else)",
	[STEP_NEIGHBOUR_BEFORE] = "page before the range",
	[STEP_NEIGHBOUR_AFTER] = "page after the range",
	[STEP_PUNCHED] = "punched private page still holds its old data (expected: anything else)",
	[STEP_NOT_PUNCHED] = "page whose gmem was not punched",
	[STEP_PVALIDATE] = "PVALIDATE return code",
	[STEP_PVALIDATE_NOUPDATE] = "PVALIDATE did not update the RMP (CF=1) on a page that must be fresh; got = page size (0 4K, 1 2M)",
	[STEP_PSC] = "GHCB MSR Page State Change response",
	[STEP_2M_AT_MISALIGNED] = "2M PVALIDATE succeeded at a gmem offset misaligned to 2M (2M RMP entry at misaligned gfn/index)",
};

/*
 * The mailbox, at MBOX_GPA (identity mapped, shared): guest requests (cmd,
 * args), host parameters, guest counters.
 */
struct mbox {
	uint64_t cmd;
	uint64_t args[4];
	/* host -> guest */
	uint64_t gpa, size, to_shared, done, misaligned;
	uint64_t old_shared, guest_shared, guest_private;
	/* guest -> host, zeroed by the host per subtest */
	uint64_t pv_2m_ok, pv_2m_fallback, pv_2m_last_rc, pv_4k;
};

#define MB	((volatile struct mbox *)MBOX_GPA)

/* ---- guest: no ucall, no CPUID, no port I/O: every #VC is fatal ---- */

static uint64_t rep8(uint8_t p)
{
	return p * 0x0101010101010101ull;
}

static void doorbell(uint64_t cmd, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3)
{
	MB->cmd = cmd;
	MB->args[0] = a0;
	MB->args[1] = a1;
	MB->args[2] = a2;
	MB->args[3] = a3;
	if (!snpt_psc_resp_ok(snpt_psc_msr(DOORBELL_GPA, SNPT_PSC_OP_SHARED)))
		snpt_guest_terminate(1);
}

static void guest_fail(uint64_t step, uint64_t gpa, uint64_t want, uint64_t got)
{
	doorbell(SYNC_FAIL, step, gpa, want, got);
}

static volatile uint64_t *view(bool priv, uint64_t gpa)
{
	return (volatile uint64_t *)(priv ? gpa - DATA_GPA + PRIV_GVA : gpa);
}

static bool guest_check(uint64_t step, bool priv, uint64_t gpa, uint64_t size, uint8_t pattern)
{
	volatile uint64_t *mem = view(priv, gpa);
	uint64_t want = rep8(pattern), i, got;

	for (i = 0; i < size / 8; i++) {
		got = mem[i];
		if (got != want) {
			guest_fail(step, gpa + i * 8, want, got);
			return false;
		}
	}
	return true;
}

/* No page of [gpa, gpa + size) may consist of nothing but @pattern. */
static bool guest_check_not(uint64_t step, bool priv, uint64_t gpa, uint64_t size,
			    uint8_t pattern)
{
	uint64_t want = rep8(pattern), pg, i;

	for (pg = gpa; pg < gpa + size; pg += PAGE_SIZE) {
		volatile uint64_t *mem = view(priv, pg);

		for (i = 0; i < PAGE_SIZE / 8; i++)
			if (mem[i] != want)
				break;
		if (i == PAGE_SIZE / 8) {
			guest_fail(step, pg, 0, want);
			return false;
		}
	}
	return true;
}

static void guest_fill(bool priv, uint64_t gpa, uint64_t size, uint8_t pattern)
{
	memset((void *)view(priv, gpa), pattern, size);
}

/*
 * Validate or rescind [gpa, gpa + size) (through the private view); each
 * page must change RMP state.  2M-aligned 2M chunks try a 2M PVALIDATE
 * first.
 */
static bool guest_pvalidate_range(uint64_t gpa, uint64_t size, bool validate)
{
	uint64_t end = gpa + size, rc;
	bool noupd;

	while (gpa < end) {
		if (!(gpa & (SZ_2M - 1)) && end - gpa >= SZ_2M) {
			rc = snpt_pvalidate((uint64_t)view(true, gpa), true, validate, &noupd);
			if (!rc) {
				MB->pv_2m_ok++;
				if (noupd) {
					guest_fail(STEP_PVALIDATE_NOUPDATE, gpa, 0, 1);
					return false;
				}
				if (MB->misaligned) {
					guest_fail(STEP_2M_AT_MISALIGNED, gpa,
						   SNPT_PVALIDATE_FAIL_SIZEMISMATCH, 0);
					return false;
				}
				gpa += SZ_2M;
				continue;
			}
			MB->pv_2m_fallback++;
			MB->pv_2m_last_rc = rc;
		}
		rc = snpt_pvalidate((uint64_t)view(true, gpa), false, validate, &noupd);
		if (rc) {
			guest_fail(STEP_PVALIDATE, gpa, 0, rc);
			return false;
		}
		if (noupd) {
			guest_fail(STEP_PVALIDATE_NOUPDATE, gpa, 0, 0);
			return false;
		}
		MB->pv_4k++;
		gpa += PAGE_SIZE;
	}
	return true;
}

static bool guest_psc_range(uint64_t gpa, uint64_t size, bool to_shared)
{
	uint64_t end = gpa + size, resp;

	for (; gpa < end; gpa += PAGE_SIZE) {
		resp = snpt_psc_msr(gpa, to_shared ? SNPT_PSC_OP_SHARED : SNPT_PSC_OP_PRIVATE);
		if (!snpt_psc_resp_ok(resp)) {
			guest_fail(STEP_PSC, gpa, SNPT_GHCB_PSC_RESP, resp);
			return false;
		}
	}
	return true;
}

/* What an SNP guest does: rescind, then share; or privatize, then validate. */
static bool guest_convert(uint64_t gpa, uint64_t size, bool to_shared)
{
	if (to_shared)
		return guest_pvalidate_range(gpa, size, false) &&
		       guest_psc_range(gpa, size, true);
	return guest_psc_range(gpa, size, false) &&
	       guest_pvalidate_range(gpa, size, true);
}

static void host_check(uint64_t gpa, uint64_t size, uint8_t pattern)
{
	doorbell(SYNC_HOST_CHECK, gpa, size, pattern, 0);
}

/*
 * [gpa, gpa + size) is private, validated and holds @pattern.  The host
 * punches the gmem behind its first and last page: exactly those must come
 * back fresh (PVALIDATE changes the RMP, old data gone).
 */
static bool guest_check_translation(uint64_t gpa, uint64_t size, uint8_t pattern)
{
	uint64_t last = gpa + size - PAGE_SIZE;

	doorbell(SYNC_PUNCH, gpa, PAGE_SIZE, 0, 0);
	if (last != gpa)
		doorbell(SYNC_PUNCH, last, PAGE_SIZE, 0, 0);
	if (!guest_pvalidate_range(gpa, PAGE_SIZE, true) ||
	    (last != gpa && !guest_pvalidate_range(last, PAGE_SIZE, true)))
		return false;
	if (!guest_check_not(STEP_PUNCHED, true, gpa, PAGE_SIZE, pattern) ||
	    !guest_check_not(STEP_PUNCHED, true, last, PAGE_SIZE, pattern))
		return false;
	if (size > 2 * PAGE_SIZE &&
	    !guest_check(STEP_NOT_PUNCHED, true, gpa + PAGE_SIZE, size - 2 * PAGE_SIZE, pattern))
		return false;
	return true;
}

/* On entry the window is private (attributes) with its gmem punched. */
static void guest_private_to_shared(uint64_t gpa, uint64_t size)
{
	uint64_t before = gpa - PAGE_SIZE, after = gpa + size;
	uint64_t wsize = size + 2 * PAGE_SIZE;
	uint8_t s0 = MB->old_shared, s1 = MB->guest_shared, p1 = MB->guest_private;

	if (!guest_pvalidate_range(before, wsize, true))
		return;
	guest_fill(true, before, wsize, p1);
	if (!guest_check(STEP_AFTER_FILL, true, before, wsize, p1))
		return;
	host_check(before, wsize, s0);

	if (!guest_convert(gpa, size, true))
		return;

	if (!guest_check(STEP_CONVERTED, false, gpa, size, s0) ||
	    !guest_check(STEP_NEIGHBOUR_BEFORE, true, before, PAGE_SIZE, p1) ||
	    !guest_check(STEP_NEIGHBOUR_AFTER, true, after, PAGE_SIZE, p1))
		return;
	guest_fill(false, gpa, size, s1);
	if (!guest_check(STEP_AFTER_FILL, false, gpa, size, s1))
		return;
	host_check(gpa, size, s1);
	host_check(before, PAGE_SIZE, s0);
	host_check(after, PAGE_SIZE, s0);

	if (!guest_check_translation(before, PAGE_SIZE, p1))
		return;
	guest_check_translation(after, PAGE_SIZE, p1);
}

/* On entry the window is shared and holds old_shared in the host mapping. */
static void guest_shared_to_private(uint64_t gpa, uint64_t size)
{
	uint64_t before = gpa - PAGE_SIZE, after = gpa + size;
	uint64_t wsize = size + 2 * PAGE_SIZE;
	uint8_t s0 = MB->old_shared, s1 = MB->guest_shared, p1 = MB->guest_private;

	if (!guest_check(STEP_INITIAL, false, before, wsize, s0))
		return;
	guest_fill(false, before, wsize, s1);
	if (!guest_check(STEP_AFTER_FILL, false, before, wsize, s1))
		return;
	host_check(before, wsize, s1);

	if (!guest_convert(gpa, size, false))
		return;

	/* The shared contents must not show through as private data. */
	if (!guest_check_not(STEP_CONVERTED_NOT_SHARED, true, gpa, size, s1) ||
	    !guest_check(STEP_NEIGHBOUR_BEFORE, false, before, PAGE_SIZE, s1) ||
	    !guest_check(STEP_NEIGHBOUR_AFTER, false, after, PAGE_SIZE, s1))
		return;
	guest_fill(true, gpa, size, p1);
	if (!guest_check(STEP_AFTER_FILL, true, gpa, size, p1))
		return;
	/* Private writes never show through the shared mapping. */
	host_check(before, wsize, s1);

	guest_check_translation(gpa, size, p1);
}

static void guest_code(void)
{
	for (;;) {
		doorbell(SYNC_NEXT, 0, 0, 0, 0);
		if (MB->done)
			break;
		if (MB->to_shared)
			guest_private_to_shared(MB->gpa, MB->size);
		else
			guest_shared_to_private(MB->gpa, MB->size);
	}
	doorbell(SYNC_DONE, 0, 0, 0, 0);
	snpt_guest_terminate(0);
}

/* ---- host ---- */

struct ctx {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	struct mbox *mb;	/* host view of the mailbox */
	uint8_t *data_hva;	/* host view of the data slot (shared) */
	int gmem_fd;
	uint64_t gmem_offset;
	uint64_t psc_exits;
	bool failed;
};

#include "gmem_conv_util.h"

/* A mailbox request; returns 1 for SYNC_NEXT, 2 for SYNC_DONE, 0 to go on. */
static int handle_doorbell(struct ctx *c)
{
	struct mbox *mb = c->mb;
	uint64_t step = mb->args[0];

	switch (mb->cmd) {
	case SYNC_NEXT:
		return 1;
	case SYNC_DONE:
		return 2;
	case SYNC_HOST_CHECK:
		host_check_mem(c, mb->args[0], mb->args[1], mb->args[2]);
		return 0;
	case SYNC_PUNCH:
		host_punch(c, mb->args[0], mb->args[1]);
		return 0;
	case SYNC_FAIL:
		fail(c, "guest: %s: gpa 0x%lx: got 0x%lx, expected 0x%lx",
		     step < ARRAY_SIZE(step_names) && step_names[step] ? step_names[step] : "?",
		     mb->args[1], mb->args[3], mb->args[2]);
		return 0;
	default:
		fail(c, "unknown mailbox command 0x%lx", mb->cmd);
		return -1;
	}
}

static int handle_hypercall(struct ctx *c)
{
	struct kvm_run *run = c->vcpu->run;
	uint64_t gpa = run->hypercall.args[0];
	uint64_t size = run->hypercall.args[1] * PAGE_SIZE;
	bool private = run->hypercall.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED;
	int r;

	if (run->hypercall.nr != KVM_HC_MAP_GPA_RANGE) {
		fail(c, "unexpected hypercall %llu", run->hypercall.nr);
		run->hypercall.ret = -EINVAL;
		return 0;
	}
	if (gpa == DOORBELL_GPA) {
		r = handle_doorbell(c);
		run->hypercall.ret = r < 0 ? -EINVAL : 0;
		return r;
	}
	c->psc_exits++;
	if (gpa < DATA_GPA || gpa + size > DATA_GPA + SLOT_SIZE) {
		fail(c, "page state change outside the data slot: gpa 0x%lx size 0x%lx", gpa, size);
		run->hypercall.ret = -EINVAL;
		return 0;
	}
	run->hypercall.ret = set_attrs(c, gpa, size, private) ? -EINVAL : 0;
	return 0;
}

/*
 * Run until the guest asks for the next subtest (0), is done (1), or
 * something unrecoverable happens (-1).
 */
static int run_until_next(struct ctx *c)
{
	struct kvm_run *run = c->vcpu->run;
	int r;

	for (;;) {
		r = _vcpu_run(c->vcpu);
		if (r) {
			fail(c, "KVM_RUN failed: %s (exit reason %u: %s)", strerror(errno),
			     run->exit_reason, exit_reason_str(run->exit_reason));
			return -1;
		}
		switch (run->exit_reason) {
		case KVM_EXIT_HYPERCALL:
			r = handle_hypercall(c);
			if (r < 0)
				return -1;
			if (r == 1)
				return 0;
			if (r == 2)
				return 1;
			break;
		case KVM_EXIT_SYSTEM_EVENT:
			fail(c, "guest terminated: system event %u, GHCB MSR 0x%llx (reason code 0x%llx)",
			     run->system_event.type,
			     run->system_event.ndata ? run->system_event.data[0] : 0ull,
			     run->system_event.ndata ? (run->system_event.data[0] >> 16) & 0xff : 0ull);
			return -1;
		case KVM_EXIT_MEMORY_FAULT:
			fail(c, "KVM_EXIT_MEMORY_FAULT: gpa 0x%llx size 0x%llx flags 0x%llx (implicit conversion: guest used the wrong view or a conversion was lost)",
			     run->memory_fault.gpa, run->memory_fault.size,
			     run->memory_fault.flags);
			return -1;
		default:
			fail(c, "unexpected exit reason %u (%s)", run->exit_reason,
			     exit_reason_str(run->exit_reason));
			return -1;
		}
	}
}

static void test_conversions_at_offset(uint64_t off, unsigned int *pattern_seed)
{
	struct ctx c = { .gmem_offset = off };
	bool dead = false;
	unsigned int ri, dir;
	char name[128];

	c.vm = snpt_vm_create(&c.vcpu, guest_code, SLOT0_PAGES, SLOT0_EXTRA_PAGES);
	vm_enable_cap(c.vm, KVM_CAP_EXIT_HYPERCALL, BIT_ULL(KVM_HC_MAP_GPA_RANGE));
	c.gmem_fd = snph_vm_create_guest_memfd(c.vm, GMEM_SIZE, gmem_create_flags);
	snph_vm_mem_add(c.vm, VM_MEM_SRC_ANONYMOUS, DATA_GPA, DATA_SLOT,
		   SLOT_SIZE / PAGE_SIZE, KVM_MEM_GUEST_MEMFD, c.gmem_fd, off);
	snpt_map_shared_and_private_views(c.vm, DATA_SLOT, DATA_GPA, SLOT_SIZE, PRIV_GVA);
	c.data_hva = addr_gpa2hva(c.vm, DATA_GPA);

	/* The mailbox: ordinary (non-gmem, never private) memory, identity mapped. */
	snph_vm_mem_add(c.vm, VM_MEM_SRC_ANONYMOUS, MBOX_GPA, MBOX_SLOT, 1, 0, -1, 0);
	virt_map(c.vm, MBOX_GPA, MBOX_GPA, 1);
	c.mb = addr_gpa2hva(c.vm, MBOX_GPA);
	memset(c.mb, 0, PAGE_SIZE);

	snpt_launch(c.vm);

	if (run_until_next(&c))
		dead = true;

	for (ri = 0; ri < NR_RANGES; ri++) {
		for (dir = 0; dir < 2; dir++) {
			const struct range_kind *rk = &range_kinds[ri];
			uint64_t gpa = DATA_GPA + rk->start;
			uint64_t before = gpa - PAGE_SIZE, wsize = rk->size + 2 * PAGE_SIZE;
			unsigned int n = (*pattern_seed)++;

			snprintf(name, sizeof(name), "snp_offset_0x%lx_range_%s_%s", off, rk->name,
				 dir ? "shared_to_private" : "private_to_shared");
			if (dead) {
				ksft_print_msg("%s: not run, the VM is unusable after an earlier failure\n",
					       name);
				ksft_test_result_fail("%s\n", name);
				continue;
			}
			c.failed = false;
			c.psc_exits = 0;

			/* Clean slate: all shared, gmem empty, known shared contents. */
			set_attrs(&c, DATA_GPA, SLOT_SIZE, false);
			host_punch(&c, DATA_GPA, SLOT_SIZE);
			c.mb->old_shared = 0x10 + (n % 0x30);
			c.mb->guest_shared = 0x50 + (n % 0x30);
			c.mb->guest_private = 0x90 + (n % 0x30);
			memset(addr_gpa2hva(c.vm, before), c.mb->old_shared, wsize);
			if (!dir)
				set_attrs(&c, before, wsize, true);

			c.mb->gpa = gpa;
			c.mb->size = rk->size;
			c.mb->to_shared = !dir;
			c.mb->misaligned = !!(off & (SZ_2M - 1));
			c.mb->done = 0;
			c.mb->pv_2m_ok = c.mb->pv_2m_fallback = 0;
			c.mb->pv_2m_last_rc = c.mb->pv_4k = 0;

			if (!c.failed && run_until_next(&c))
				dead = true;
			ksft_print_msg("%s: pvalidate 2M ok %lu, 2M failed->4K %lu (last rc %lu), 4K %lu; PSC exits %lu\n",
				       name, c.mb->pv_2m_ok, c.mb->pv_2m_fallback,
				       c.mb->pv_2m_last_rc, c.mb->pv_4k, c.psc_exits);
			if (!off)
				pv_2m_ok_at_offset_0 += c.mb->pv_2m_ok;
			ksft_test_result(!c.failed, "%s\n", name);
		}
	}

	if (!dead) {
		c.mb->done = 1;
		if (run_until_next(&c) != 1)
			ksft_print_msg("offset 0x%lx: guest did not finish cleanly\n", off);
	}
	kvm_vm_free(c.vm);
	close(c.gmem_fd);
}

int main(int argc, char *argv[])
{
	unsigned int seed = 0, i;
	int opt;

	while ((opt = getopt(argc, argv, "f:H")) != -1) {
		if (opt == 'f') {
			gmem_create_flags = strtoull(optarg, NULL, 0);
		} else if (opt == 'H') {
			require_huge = true;
		} else {
			fprintf(stderr, "usage: %s [-f GMEM_CREATE_FLAGS] [-H]\n", argv[0]);
			exit(KSFT_FAIL);
		}
	}

	ksft_print_header();
	snpt_require_snp();

	ksft_set_plan(NR_TESTS + require_huge);
	for (i = 0; i < NR_OFFSETS; i++)
		test_conversions_at_offset(gmem_offsets[i], &seed);
	if (require_huge) {
		ksft_print_msg("offset 0x0: %lu successful 2M PVALIDATEs with huge folios\n",
			       pv_2m_ok_at_offset_0);
		ksft_test_result(pv_2m_ok_at_offset_0 > 0,
				 "snp_offset_0x0_2m_rmp_entry_with_huge_folios\n");
	}
	ksft_finished();
}
