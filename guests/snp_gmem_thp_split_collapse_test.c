// SPDX-License-Identifier: GPL-2.0
/*
 * snp_gmem_thp_split_collapse_test - the SEV-SNP counterpart of
 * gmem_thp_split_collapse_test: THP split and collapse of the shared
 * backing of a guest_memfd memslot of an SNP VM, interleaved with
 * private<->shared conversions done the way an SNP guest does them.
 *
 * Part of snp-harness; built inside tools/testing/selftests/kvm of the kernel
 * tree under test.  The SNP VM creation and launch, and the guest's GHCB MSR
 * and PVALIDATE primitives, are in snp_util.h (see there, and
 * snp_gmem_conversions_test.c, for why the guest cannot use ucall).
 *
 * Setup: one SNP VM (slot 0 guest_memfd backed and launched), one 4 MiB data
 * memslot (two 2 MiB chunks, A and B) at a 2 MiB aligned GPA (4G).  Shared
 * memory is anonymous THP (VM_MEM_SRC_ANONYMOUS_THP: 2 MiB aligned mapping,
 * MADV_HUGEPAGE); private memory comes from a 4 MiB guest_memfd.  The data
 * slot is not launched, so it starts shared.  The guest maps it twice:
 * identity mapped with the C-bit clear (shared view) and at PRIV_GVA with the
 * C-bit set (private view).
 *
 * Conversions, from the guest: to private = GHCB MSR Page State Change
 * (private) per 4K page, then PVALIDATE (validate) per 4K page; to shared =
 * PVALIDATE (rescind), then PSC (shared).  KVM forwards each PSC as a
 * KVM_HC_MAP_GPA_RANGE exit; the host fallocate()s (to private) or punches
 * (to shared) the guest_memfd and sets the memory attributes.  Every page
 * the guest validates was punched before, so PVALIDATE must update the RMP
 * (CF clear).  Only 4K PVALIDATE is used: 6.12 guest_memfd has 4K folios
 * only, so RMP entries are 4K.
 *
 * Guest<->host channel: a mailbox page (MBOX_GPA, its own non-guest_memfd
 * memslot) and the doorbell of snp_util.h.  The guest syncs with a stage
 * number and its count of mismatched 8-byte words (first mismatching gpa);
 * a failed PSC or PVALIDATE is reported through the mailbox and the guest
 * terminates (GHCB_MSR_TERM_REQ): the remaining subtests are "not ok".
 *
 * Between phases the host forces, on the userspace range of the shared
 * mapping (exactly the memslot's 4 MiB):
 *   - a split: "<pid>,0x<start>,0x<end>" written to
 *     /sys/kernel/debug/split_huge_pages;
 *   - a collapse: madvise(MADV_COLLAPSE).
 * and checks AnonHugePages of that mapping in /proc/self/smaps, and that the
 * data the guest and host wrote is intact, seen from both sides.
 *
 * Subtests (names and order as in gmem_thp_split_collapse_test):
 *   1 fault_in_thp            the guest writes the whole slot while shared
 *                             (shared view): AnonHugePages == 4096 kB, the
 *                             host sees the data
 *   2 split_thp               debugfs split: AnonHugePages == 0, host data
 *                             intact, thp_split_page grew by >= the THPs split
 *   3 data_intact_after_split the guest reads its data back after the split
 *   4 split_then_convert      4K (in A) + 2M (B) private (PSC + PVALIDATE);
 *                             private data (private view) correct; the shared
 *                             view (host) and the shared remainder (guest)
 *                             untouched; back to shared (rescind + PSC), the
 *                             shared data survived; guest rewrite seen by the
 *                             host
 *   5 collapse_thp            MADV_COLLAPSE: AnonHugePages == 4096 kB, host
 *                             data intact, thp_collapse_alloc grew by >= 2
 *   6 data_intact_after_collapse  the guest reads its data back
 *   7 collapse_then_convert   as 4 with 2M (A) + 4K (in B) private, and the
 *                             shared THPs survive the conversions
 *   8 split_while_private     A private (guest wrote private data) during the
 *                             split: private data and shared data intact
 *   9 collapse_while_private  B private during the collapse: the same
 *
 * A skipped subtest is "ok <n> <name> # SKIP <reason>".
 *
 * Skips: the whole test (KSFT_SKIP, "1..0 # SKIP <reason>") without
 * KVM_X86_SNP_VM in KVM_CAP_VM_TYPES, a usable /dev/sev, guest_memfd, memory
 * attributes, KVM_CAP_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE), THP (or THP
 * "never"), or a writable /sys/kernel/debug/split_huge_pages.  If
 * MADV_COLLAPSE fails with EINVAL, subtests 5, 6, 7 and 9 skip with the
 * reason, and 8 skips because there is no THP left to split.
 *
 * Diagnostics printed before a subtest's result line belong to it:
 *   # AnonHugePages: <n> kB                  (the memslot's mapping, smaps)
 *   # vmstat <counter>: +<delta>             (/proc/vmstat, around the host
 *                                            action of that subtest; system
 *                                            wide, "n/a" if absent)
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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
#include "gmem_thp_util.h"



#define DATA_SLOT		10
#define DATA_GPA		((uint64_t)SZ_4G)	/* 2M aligned */
#define DATA_SIZE		((uint64_t)(2 * SZ_2M))
#define CHUNK_A			(DATA_GPA)
#define CHUNK_B			(DATA_GPA + SZ_2M)
#define NR_THPS			(DATA_SIZE / SZ_2M)
#define PRIV_GVA		(DATA_GPA + SZ_1G)	/* C-bit view of the data slot */
#define SLOT0_PAGES		2048	/* 6.12 path: code, data, page tables, stack */
#define SLOT0_EXTRA_PAGES	512	/* library path: page tables of the two views, mailbox */
#define MBOX_SLOT		11
#define MBOX_GPA		(DATA_GPA + SZ_16M)	/* a non-gmem slot: always shared */

/* Byte patterns: shared data the guest/host write, private data. */
#define P_INIT			0x11
#define P_SHARED2		0x22
#define P_SHARED3		0x33
#define P_PRIV1			0xa1
#define P_PRIV2			0xa2
#define P_PRIV3			0xa3
#define P_PRIV4			0xa4

enum stage {
	ST_FAULTED = 1,
	ST_SPLIT_READ,
	ST_SPLIT_PRIVATE,
	ST_SPLIT_SHARED,
	ST_COLLAPSE_READ,
	ST_COLLAPSE_PRIVATE,
	ST_COLLAPSE_SHARED,
	ST_PRIV_BEFORE_SPLIT,
	ST_SPLIT_WHILE_PRIVATE,
	ST_PRIV_BEFORE_COLLAPSE,
	ST_COLLAPSE_WHILE_PRIVATE,
	ST_DONE,
};

static const char * const subtests[] = {
	"fault_in_thp",
	"split_thp",
	"data_intact_after_split",
	"split_then_convert",
	"collapse_thp",
	"data_intact_after_collapse",
	"collapse_then_convert",
	"split_while_private",
	"collapse_while_private",
};

/* Mailbox commands. */
enum {
	CMD_SYNC = 0x1000,	/* args: stage, mismatched words, first bad gpa */
	CMD_FAIL,		/* args: what (FAIL_*), gpa, rc/resp, no_update */
};

enum {
	FAIL_PSC = 1,
	FAIL_PVALIDATE,
	FAIL_PVALIDATE_NOUPDATE,
};

/* The mailbox, at MBOX_GPA (identity mapped, shared). */
struct mbox {
	uint64_t cmd;
	uint64_t args[4];
	/* guest scratch: mismatches since the last sync */
	uint64_t bad, first_bad;
};

#define MB	((volatile struct mbox *)MBOX_GPA)

/* ---- guest: no ucall, no CPUID, no port I/O: every #VC is fatal ---- */

static inline uint64_t pattern64(uint8_t p)
{
	return 0x0101010101010101ull * p;
}

static void doorbell(uint64_t cmd, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3)
{
	MB->cmd = cmd;
	MB->args[0] = a0;
	MB->args[1] = a1;
	MB->args[2] = a2;
	MB->args[3] = a3;
	snpt_ring_doorbell();
}

static void __attribute__((noreturn)) guest_die(uint64_t what, uint64_t gpa, uint64_t rc,
						uint64_t noupd)
{
	doorbell(CMD_FAIL, what, gpa, rc, noupd);
	snpt_guest_terminate(2);
}

static volatile uint64_t *view(bool priv, uint64_t gpa)
{
	return (volatile uint64_t *)(priv ? gpa - DATA_GPA + PRIV_GVA : gpa);
}

static void guest_fill(bool priv, uint64_t gpa, uint64_t size, uint8_t p)
{
	volatile uint64_t *q = view(priv, gpa);
	uint64_t v = pattern64(p), i;

	for (i = 0; i < size / 8; i++)
		q[i] = v;
}

static void guest_check(bool priv, uint64_t gpa, uint64_t size, uint8_t p)
{
	volatile uint64_t *q = view(priv, gpa);
	uint64_t v = pattern64(p), i;

	for (i = 0; i < size / 8; i++) {
		if (q[i] != v) {
			if (!MB->bad)
				MB->first_bad = gpa + i * 8;
			MB->bad++;
		}
	}
}

static void guest_sync(uint64_t stage)
{
	doorbell(CMD_SYNC, stage, MB->bad, MB->first_bad, 0);
	MB->bad = 0;
	MB->first_bad = 0;
}

/* 4K PVALIDATE of each page through the private view; each must change the RMP. */
static void guest_pvalidate_range(uint64_t gpa, uint64_t size, bool validate)
{
	uint64_t end = gpa + size, rc;
	bool noupd;

	for (; gpa < end; gpa += PAGE_SIZE) {
		rc = snpt_pvalidate((uint64_t)view(true, gpa), false, validate, &noupd);
		if (rc)
			guest_die(FAIL_PVALIDATE, gpa, rc, validate);
		if (noupd)
			guest_die(FAIL_PVALIDATE_NOUPDATE, gpa, 0, validate);
	}
}

static void guest_psc_range(uint64_t gpa, uint64_t size, bool shared)
{
	uint64_t end = gpa + size, resp;

	for (; gpa < end; gpa += PAGE_SIZE) {
		resp = snpt_psc_msr(gpa, shared ? SNPT_PSC_OP_SHARED : SNPT_PSC_OP_PRIVATE);
		if (!snpt_psc_resp_ok(resp))
			guest_die(FAIL_PSC, gpa, resp, shared);
	}
}

/* What an SNP guest does: rescind, then share; or privatize, then validate. */
static void guest_map(uint64_t gpa, uint64_t size, bool shared)
{
	if (shared) {
		guest_pvalidate_range(gpa, size, false);
		guest_psc_range(gpa, size, true);
	} else {
		guest_psc_range(gpa, size, false);
		guest_pvalidate_range(gpa, size, true);
	}
}

#define S	false	/* shared view */
#define PV	true	/* private view */

static void guest_code(void)
{
	/* fault_in_thp: the data slot starts shared. */
	guest_fill(S, DATA_GPA, DATA_SIZE, P_INIT);
	guest_check(S, DATA_GPA, DATA_SIZE, P_INIT);
	guest_sync(ST_FAULTED);

	/* The host split the THPs. */
	guest_check(S, DATA_GPA, DATA_SIZE, P_INIT);
	guest_sync(ST_SPLIT_READ);

	/* split_then_convert: one 4K page in A and all of B private. */
	guest_map(CHUNK_A + PAGE_SIZE, PAGE_SIZE, false);
	guest_map(CHUNK_B, SZ_2M, false);
	guest_fill(PV, CHUNK_A + PAGE_SIZE, PAGE_SIZE, P_PRIV1);
	guest_fill(PV, CHUNK_B, SZ_2M, P_PRIV1);
	guest_check(PV, CHUNK_A + PAGE_SIZE, PAGE_SIZE, P_PRIV1);
	guest_check(PV, CHUNK_B, SZ_2M, P_PRIV1);
	guest_check(S, CHUNK_A, PAGE_SIZE, P_INIT);
	guest_check(S, CHUNK_A + 2 * PAGE_SIZE, SZ_2M - 2 * PAGE_SIZE, P_INIT);
	guest_sync(ST_SPLIT_PRIVATE);
	guest_map(CHUNK_A + PAGE_SIZE, PAGE_SIZE, true);
	guest_map(CHUNK_B, SZ_2M, true);
	guest_check(S, DATA_GPA, DATA_SIZE, P_INIT);
	guest_fill(S, DATA_GPA, DATA_SIZE, P_SHARED2);
	guest_sync(ST_SPLIT_SHARED);

	/* The host collapsed the range. */
	guest_check(S, DATA_GPA, DATA_SIZE, P_SHARED2);
	guest_sync(ST_COLLAPSE_READ);

	/* collapse_then_convert: all of A and one 4K page in B private. */
	guest_map(CHUNK_A, SZ_2M, false);
	guest_map(CHUNK_B + PAGE_SIZE, PAGE_SIZE, false);
	guest_fill(PV, CHUNK_A, SZ_2M, P_PRIV2);
	guest_fill(PV, CHUNK_B + PAGE_SIZE, PAGE_SIZE, P_PRIV2);
	guest_check(PV, CHUNK_A, SZ_2M, P_PRIV2);
	guest_check(PV, CHUNK_B + PAGE_SIZE, PAGE_SIZE, P_PRIV2);
	guest_check(S, CHUNK_B, PAGE_SIZE, P_SHARED2);
	guest_check(S, CHUNK_B + 2 * PAGE_SIZE, SZ_2M - 2 * PAGE_SIZE, P_SHARED2);
	guest_sync(ST_COLLAPSE_PRIVATE);
	guest_map(CHUNK_A, SZ_2M, true);
	guest_map(CHUNK_B + PAGE_SIZE, PAGE_SIZE, true);
	guest_check(S, DATA_GPA, DATA_SIZE, P_SHARED2);
	guest_fill(S, DATA_GPA, DATA_SIZE, P_SHARED3);
	guest_sync(ST_COLLAPSE_SHARED);

	/* split_while_private: A private across the split. */
	guest_map(CHUNK_A, SZ_2M, false);
	guest_fill(PV, CHUNK_A, SZ_2M, P_PRIV3);
	guest_check(PV, CHUNK_A, SZ_2M, P_PRIV3);
	guest_check(S, CHUNK_B, SZ_2M, P_SHARED3);
	guest_sync(ST_PRIV_BEFORE_SPLIT);
	guest_check(PV, CHUNK_A, SZ_2M, P_PRIV3);
	guest_check(S, CHUNK_B, SZ_2M, P_SHARED3);
	guest_map(CHUNK_A, SZ_2M, true);
	guest_check(S, DATA_GPA, DATA_SIZE, P_SHARED3);
	guest_sync(ST_SPLIT_WHILE_PRIVATE);

	/* collapse_while_private: B private across the collapse. */
	guest_map(CHUNK_B, SZ_2M, false);
	guest_fill(PV, CHUNK_B, SZ_2M, P_PRIV4);
	guest_check(PV, CHUNK_B, SZ_2M, P_PRIV4);
	guest_check(S, CHUNK_A, SZ_2M, P_SHARED3);
	guest_sync(ST_PRIV_BEFORE_COLLAPSE);
	guest_check(PV, CHUNK_B, SZ_2M, P_PRIV4);
	guest_check(S, CHUNK_A, SZ_2M, P_SHARED3);
	guest_map(CHUNK_B, SZ_2M, true);
	guest_check(S, DATA_GPA, DATA_SIZE, P_SHARED3);
	guest_sync(ST_COLLAPSE_WHILE_PRIVATE);

	guest_sync(ST_DONE);
	snpt_guest_terminate(0);
}

/* ---- host ---- */

static struct kvm_vm *vm;
static struct kvm_vcpu *vcpu;
static struct mbox *mb;		/* host view of the mailbox */
static int gmem_fd;
static uint8_t *hva;		/* host mapping of DATA_GPA, 2M aligned */
static bool dead;		/* the guest terminated or KVM_RUN failed */
static char dead_why[256];

static long report_anon_huge(void)
{
	long kb = anon_huge_kb((uintptr_t)hva, (uintptr_t)hva + DATA_SIZE);

	ksft_print_msg("AnonHugePages: %ld kB\n", kb);
	return kb;
}

/* Bytes of hva[off, off + size) that differ from p. */
static size_t host_check(uint64_t off, uint64_t size, uint8_t p)
{
	size_t i, bad = 0;

	for (i = 0; i < size; i++)
		bad += hva[off + i] != p;
	return bad;
}

static __printf(1, 2) void mark_dead(const char *fmt, ...)
{
	va_list ap;

	if (dead)
		return;
	dead = true;
	va_start(ap, fmt);
	vsnprintf(dead_why, sizeof(dead_why), fmt, ap);
	va_end(ap);
	ksft_print_msg("%s\n", dead_why);
}

/* A PSC for the data slot: gmem allocate/punch + memory attributes. */
static void handle_psc(struct kvm_run *run)
{
	uint64_t gpa = run->hypercall.args[0];
	uint64_t size = run->hypercall.args[1] * PAGE_SIZE;
	bool private = run->hypercall.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED;
	struct kvm_memory_attributes attr = {
		.attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
		.address = gpa,
		.size = size,
	};
	uint64_t off = gpa - DATA_GPA;
	int mode = private ? 0 : FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE;

	run->hypercall.ret = -EINVAL;
	if (gpa < DATA_GPA || gpa + size > DATA_GPA + DATA_SIZE) {
		ksft_print_msg("page state change outside the data slot: gpa 0x%lx size 0x%lx\n",
			       gpa, size);
		return;
	}
	if (fallocate(gmem_fd, mode, off, size)) {
		ksft_print_msg("fallocate(%s, gmem offset 0x%lx, 0x%lx): %s\n",
			       private ? "allocate" : "punch", off, size, strerror(errno));
		return;
	}
	if (__vm_ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &attr)) {
		ksft_print_msg("KVM_SET_MEMORY_ATTRIBUTES(gpa 0x%lx, size 0x%lx, %s): %s\n",
			       gpa, size, private ? "private" : "shared", strerror(errno));
		return;
	}
	run->hypercall.ret = 0;
}

static const char *fail_what(uint64_t what)
{
	switch (what) {
	case FAIL_PSC:
		return "GHCB MSR Page State Change failed (rc = response MSR, arg = to shared)";
	case FAIL_PVALIDATE:
		return "PVALIDATE failed (arg = validate)";
	case FAIL_PVALIDATE_NOUPDATE:
		return "PVALIDATE did not update the RMP (CF=1) on a page that must change state (arg = validate)";
	default:
		return "?";
	}
}

/*
 * Run the guest to its next sync, which must be `stage`.  Returns the number
 * of mismatched 8-byte words the guest found since its previous sync, or -1
 * if the guest is dead (see dead_why).
 */
static long run_to(enum stage stage)
{
	struct kvm_run *run = vcpu->run;
	uint64_t gpa;

	if (dead)
		return -1;
	for (;;) {
		if (_vcpu_run(vcpu)) {
			mark_dead("KVM_RUN failed: %s (exit reason %u: %s)", strerror(errno),
				  run->exit_reason, exit_reason_str(run->exit_reason));
			return -1;
		}
		switch (run->exit_reason) {
		case KVM_EXIT_HYPERCALL:
			if (run->hypercall.nr != KVM_HC_MAP_GPA_RANGE) {
				mark_dead("unexpected hypercall %llu", run->hypercall.nr);
				return -1;
			}
			gpa = run->hypercall.args[0];
			if (gpa != SNPT_DOORBELL_GPA) {
				handle_psc(run);
				break;
			}
			run->hypercall.ret = 0;
			if (mb->cmd == CMD_FAIL) {
				ksft_print_msg("guest: %s: gpa 0x%lx rc 0x%lx arg %lu\n",
					       fail_what(mb->args[0]), mb->args[1], mb->args[2],
					       mb->args[3]);
				break;
			}
			if (mb->cmd != CMD_SYNC) {
				mark_dead("unknown mailbox command 0x%lx", mb->cmd);
				return -1;
			}
			if (mb->args[0] != stage) {
				mark_dead("guest synced at stage %lu, expected %u", mb->args[0], stage);
				return -1;
			}
			if (mb->args[1])
				ksft_print_msg("guest stage %u: %lu mismatched words, first at gpa 0x%lx\n",
					       stage, mb->args[1], mb->args[2]);
			return mb->args[1];
		case KVM_EXIT_SYSTEM_EVENT:
			mark_dead("guest terminated: system event %u, GHCB MSR 0x%llx (reason code 0x%llx)",
				  run->system_event.type,
				  run->system_event.ndata ? run->system_event.data[0] : 0ull,
				  run->system_event.ndata ?
				  (run->system_event.data[0] >> 16) & 0xff : 0ull);
			return -1;
		case KVM_EXIT_MEMORY_FAULT:
			mark_dead("KVM_EXIT_MEMORY_FAULT: gpa 0x%llx size 0x%llx flags 0x%llx (implicit conversion: guest used the wrong view or a conversion was lost)",
				  run->memory_fault.gpa, run->memory_fault.size,
				  run->memory_fault.flags);
			return -1;
		default:
			mark_dead("unexpected exit reason %u (%s)", run->exit_reason,
				  exit_reason_str(run->exit_reason));
			return -1;
		}
	}
}

/* A subtest's verdict: ok until a check fails; the first failure's reason is kept. */
struct verdict {
	bool ok;
	char why[256];
};

static __printf(3, 4) void check(struct verdict *v, bool cond, const char *fmt, ...)
{
	va_list ap;

	if (cond || !v->ok)
		return;
	v->ok = false;
	va_start(ap, fmt);
	vsnprintf(v->why, sizeof(v->why), fmt, ap);
	va_end(ap);
}

static void host_data_check(struct verdict *v, uint8_t p, const char *when)
{
	size_t bad = host_check(0, DATA_SIZE, p);

	check(v, !bad, "host sees %zu bytes != 0x%x %s", bad, p, when);
}

static void guest_data_check(struct verdict *v, enum stage stage, const char *what)
{
	long bad = run_to(stage);

	if (bad < 0)
		check(v, false, "guest unusable (%s) %s", dead_why, what);
	else
		check(v, !bad, "guest: %ld mismatched words %s", bad, what);
}

static void report(int idx, const struct verdict *v)
{
	if (!v->ok)
		ksft_print_msg("%s: %s\n", subtests[idx], v->why);
	ksft_test_result(v->ok, "%s\n", subtests[idx]);
}

static char skip_reason[256];

static void report_skip(int idx, const char *why)
{
	ksft_test_result_code(KSFT_SKIP, subtests[idx], "%s", why);
}

static const long thp_kb = DATA_SIZE / 1024;

/* The split, with its checks: every THP mapped before it must have been split. */
static void split_and_check(struct verdict *v, uint8_t host_pattern)
{
	struct vmstat before, after;
	long kb_before, kb_after;
	int err;

	kb_before = anon_huge_kb((uintptr_t)hva, (uintptr_t)hva + DATA_SIZE);
	vmstat_read(&before);
	err = thp_force_split(hva, DATA_SIZE);
	vmstat_read(&after);
	vmstat_print(&before, &after);
	kb_after = report_anon_huge();
	check(v, !err, "write(%s): %s", SPLIT_DEBUGFS, strerror(err));
	check(v, kb_after == 0, "AnonHugePages %ld kB after the split, expected 0", kb_after);
	if (vmstat_delta(&before, &after, VMSTAT_SPLIT_PAGE) >= 0)
		check(v, vmstat_delta(&before, &after, VMSTAT_SPLIT_PAGE) >= kb_before / 2048,
		      "thp_split_page +%ld, expected >= %ld",
		      vmstat_delta(&before, &after, VMSTAT_SPLIT_PAGE), kb_before / 2048);
	host_data_check(v, host_pattern, "after the split");
}

/* The collapse, with its checks. Returns false if MADV_COLLAPSE is unsupported. */
static bool collapse_and_check(struct verdict *v, uint8_t host_pattern)
{
	struct vmstat before, after;
	long kb;
	int err;

	vmstat_read(&before);
	err = thp_force_collapse(hva, DATA_SIZE);
	vmstat_read(&after);
	if (err == EINVAL) {
		snprintf(skip_reason, sizeof(skip_reason),
			 "MADV_COLLAPSE not supported (EINVAL)");
		return false;
	}
	vmstat_print(&before, &after);
	kb = report_anon_huge();
	check(v, !err, "madvise(MADV_COLLAPSE): %s", strerror(err));
	check(v, kb == thp_kb, "AnonHugePages %ld kB after the collapse, expected %ld", kb, thp_kb);
	if (vmstat_delta(&before, &after, VMSTAT_COLLAPSE_ALLOC) >= 0)
		check(v, vmstat_delta(&before, &after, VMSTAT_COLLAPSE_ALLOC) >= (long)NR_THPS,
		      "thp_collapse_alloc +%ld, expected >= %lu",
		      vmstat_delta(&before, &after, VMSTAT_COLLAPSE_ALLOC), NR_THPS);
	host_data_check(v, host_pattern, "after the collapse");
	return true;
}

int main(void)
{
	struct verdict v;
	bool collapse_ok;
	long kb;

	ksft_print_header();
	snpt_require_snp();
	if (!thp_configured() || thp_never())
		ksft_exit_skip("THP not available (%s missing or [never])\n", THP_ENABLED);
	require_split_debugfs();

	ksft_set_plan(ARRAY_SIZE(subtests));

	vm = snpt_vm_create(&vcpu, guest_code, SLOT0_PAGES, SLOT0_EXTRA_PAGES);
	vm_enable_cap(vm, KVM_CAP_EXIT_HYPERCALL, BIT_ULL(KVM_HC_MAP_GPA_RANGE));
	gmem_fd = snph_vm_create_guest_memfd(vm, DATA_SIZE, 0);
	snph_vm_mem_add(vm, VM_MEM_SRC_ANONYMOUS_THP, DATA_GPA, DATA_SLOT,
		   DATA_SIZE / vm->page_size, KVM_MEM_GUEST_MEMFD, gmem_fd, 0);
	snpt_map_shared_and_private_views(vm, DATA_SLOT, DATA_GPA, DATA_SIZE, PRIV_GVA);
	hva = addr_gpa2hva(vm, DATA_GPA);
	TEST_ASSERT(!((uintptr_t)hva & (SZ_2M - 1)), "host mapping %p not 2M aligned", hva);

	/* The mailbox: ordinary (non-gmem, never private) memory, identity mapped. */
	snph_vm_mem_add(vm, VM_MEM_SRC_ANONYMOUS, MBOX_GPA, MBOX_SLOT, 1, 0, -1, 0);
	virt_map(vm, MBOX_GPA, MBOX_GPA, 1);
	mb = addr_gpa2hva(vm, MBOX_GPA);
	memset(mb, 0, PAGE_SIZE);

	snpt_launch(vm);
	ksft_print_msg("pid %d, shared mapping 0x%lx-0x%lx, guest_memfd %d\n", getpid(),
		       (unsigned long)hva, (unsigned long)hva + DATA_SIZE, gmem_fd);

	/* 1 fault_in_thp */
	{
		struct vmstat before, after;

		v = (struct verdict){ .ok = true };
		vmstat_read(&before);
		guest_data_check(&v, ST_FAULTED, "right after writing");
		vmstat_read(&after);
		vmstat_print(&before, &after);
		kb = report_anon_huge();
		check(&v, kb == thp_kb, "AnonHugePages %ld kB after the guest's fault-in, expected %ld",
		      kb, thp_kb);
		host_data_check(&v, P_INIT, "after the guest's fault-in");
		report(0, &v);
	}

	/* 2 split_thp */
	v = (struct verdict){ .ok = true };
	split_and_check(&v, P_INIT);
	report(1, &v);

	/* 3 data_intact_after_split */
	v = (struct verdict){ .ok = true };
	guest_data_check(&v, ST_SPLIT_READ, "reading its data after the split");
	report(2, &v);

	/* 4 split_then_convert */
	v = (struct verdict){ .ok = true };
	guest_data_check(&v, ST_SPLIT_PRIVATE, "with 4K+2M private after the split");
	host_data_check(&v, P_INIT, "while 4K+2M are private (shared view changed)");
	guest_data_check(&v, ST_SPLIT_SHARED, "after converting back to shared");
	host_data_check(&v, P_SHARED2, "after the guest's rewrite");
	report(3, &v);

	/* 5 collapse_thp */
	v = (struct verdict){ .ok = true };
	collapse_ok = collapse_and_check(&v, P_SHARED2);
	if (collapse_ok)
		report(4, &v);
	else
		report_skip(4, skip_reason);

	/* 6 data_intact_after_collapse: the guest runs the stage regardless. */
	v = (struct verdict){ .ok = true };
	guest_data_check(&v, ST_COLLAPSE_READ, "reading its data after the collapse");
	if (collapse_ok)
		report(5, &v);
	else
		report_skip(5, skip_reason);

	/* 7 collapse_then_convert */
	v = (struct verdict){ .ok = true };
	guest_data_check(&v, ST_COLLAPSE_PRIVATE, "with 2M+4K private after the collapse");
	host_data_check(&v, P_SHARED2, "while 2M+4K are private (shared view changed)");
	kb = report_anon_huge();
	if (collapse_ok)
		check(&v, kb == thp_kb, "AnonHugePages %ld kB while 2M+4K are private, expected %ld",
		      kb, thp_kb);
	guest_data_check(&v, ST_COLLAPSE_SHARED, "after converting back to shared");
	host_data_check(&v, P_SHARED3, "after the guest's rewrite");
	if (collapse_ok)
		report(6, &v);
	else
		report_skip(6, skip_reason);

	/* 8 split_while_private */
	v = (struct verdict){ .ok = true };
	guest_data_check(&v, ST_PRIV_BEFORE_SPLIT, "with A private, before the split");
	kb = anon_huge_kb((uintptr_t)hva, (uintptr_t)hva + DATA_SIZE);
	if (kb) {
		split_and_check(&v, P_SHARED3);
		guest_data_check(&v, ST_SPLIT_WHILE_PRIVATE,
				 "in private A or shared data after the split");
		report(7, &v);
	} else {
		run_to(ST_SPLIT_WHILE_PRIVATE);
		report_skip(7, "no THP to split before it (AnonHugePages 0 kB)");
	}

	/* 9 collapse_while_private */
	v = (struct verdict){ .ok = true };
	guest_data_check(&v, ST_PRIV_BEFORE_COLLAPSE, "with B private, before the collapse");
	if (collapse_ok && collapse_and_check(&v, P_SHARED3)) {
		guest_data_check(&v, ST_COLLAPSE_WHILE_PRIVATE,
				 "in private B or shared data after the collapse");
		report(8, &v);
	} else {
		run_to(ST_COLLAPSE_WHILE_PRIVATE);
		report_skip(8, skip_reason);
	}

	if (!dead && run_to(ST_DONE) < 0)
		ksft_print_msg("guest did not finish cleanly\n");
	kvm_vm_free(vm);
	close(gmem_fd);

	ksft_finished();
	return 0;
}
