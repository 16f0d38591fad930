// SPDX-License-Identifier: GPL-2.0
/*
 * gmem_misaligned_conversions_test - private<->shared conversions on memslots
 * whose guest_memfd offset disagrees with the gpa modulo 2M.
 *
 * Nothing in the KVM uAPI ties guest_memfd_offset to the slot's base gfn mod
 * 2M, so code that assumes "gfn aligned to the folio order <=> gmem index
 * aligned to the folio order" breaks on such slots.  For each gmem offset
 * (0 as the aligned control, then 4K, 1M and 2M-4K) one KVM_X86_SW_PROTECTED_VM
 * gets a 6M memslot at a 2M-aligned gpa, bound at that offset into an 8M
 * guest_memfd.  Ranges of 4K, 2M (gpa-aligned) and 2M straddling a 2M gpa
 * boundary are converted private->shared and shared->private, either by the
 * host (KVM_SET_MEMORY_ATTRIBUTES) or by the guest (KVM_HC_MAP_GPA_RANGE
 * exit handled by the host).  Each subtest checks that:
 *  - the guest sees fresh (zeroed) private memory, not the shared contents,
 *    after a range becomes private, and the shared contents after it becomes
 *    shared;
 *  - what the guest writes while shared is what the host's mapping shows;
 *  - what the guest writes while private never shows through the host's
 *    mapping;
 *  - the pages just outside the range keep their old attribute;
 *  - gmem index translation is right: punching a hole at the gmem offset
 *    that corresponds to a private gpa (slot offset + gpa - slot base) zeroes
 *    exactly that gpa as seen by the guest.
 * Negative cases check that KVM rejects bad guest_memfd offsets (unaligned,
 * past the end of the file, wrapping, overlapping another binding) and
 * accepts good misaligned ones.
 *
 * -m: the shared view is the guest_memfd's own mmap() (GUEST_MEMFD_FLAG_MMAP,
 * plus INIT_SHARED where KVM_CAP_GUEST_MEMFD_FLAGS offers it): the data
 * slot's userspace_addr is a MAP_SHARED mapping of the guest_memfd at the
 * slot's offset, so shared and private are the same pages (in place).  What
 * a page holds right after a conversion is then not the uAPI's to say, so
 * those content checks are left out, and the host checks instead that the
 * pages it reads through the mapping at gmem offset (slot offset + gpa -
 * slot base) are what the guest wrote while shared, and that it cannot
 * fault in private pages (MADV_POPULATE_READ fails with EFAULT).  Only the
 * conversion subtests run, named mmap_offset_...  KSFT_SKIP, with the
 * reason, when the headers or KVM lack GUEST_MEMFD_FLAG_MMAP for
 * KVM_X86_SW_PROTECTED_VM or the host cannot fault in its shared pages
 * (mainline keeps all guest_memfd memory of VMs with private memory private
 * to the host).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <linux/falloc.h>
#include <linux/kvm_para.h>
#include <linux/sizes.h>

#include "kselftest.h"
#include "test_util.h"
#include "kvm_util.h"
#include "processor.h"
#include "snph_api.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ	22
#define MADV_POPULATE_WRITE	23
#endif

#define DATA_SLOT	10
#define DATA_GPA	((uint64_t)SZ_4G)	/* 2M aligned */
#define SLOT_SIZE	((uint64_t)SZ_4M + SZ_2M)
#define GMEM_SIZE	((uint64_t)SZ_8M)	/* > any offset + SLOT_SIZE */

static const uint64_t gmem_offsets[] = { 0, PAGE_SIZE, SZ_1M, SZ_2M - PAGE_SIZE };

/* -f: KVM_CREATE_GUEST_MEMFD flags for the data slot (e.g. a series' huge-folio flag). */
static uint64_t gmem_create_flags;
/* -m: the shared view is the guest_memfd's mmap; these flags are added for it. */
static bool gmem_mmap;
static uint64_t gmem_mmap_flags;

static const struct range_kind {
	const char *name;
	uint64_t start;	/* relative to DATA_GPA */
	uint64_t size;
} range_kinds[] = {
	{ "4k",          SZ_2M, PAGE_SIZE },	/* the page at a 2M gpa boundary */
	{ "2m",          SZ_2M, SZ_2M },	/* 2M gpa-aligned, 2M long */
	{ "2m_straddle", SZ_1M, SZ_2M },	/* crosses the 2M gpa boundary */
};

#define NR_OFFSETS	ARRAY_SIZE(gmem_offsets)
#define NR_RANGES	ARRAY_SIZE(range_kinds)
#define NR_CONV_TESTS	(NR_OFFSETS * NR_RANGES * 2 * 2)
#define NR_NEG_PER_OFF	7
#define NR_NEG_TESTS	((NR_OFFSETS - 1) * NR_NEG_PER_OFF)

enum {
	SYNC_NEXT = 0x1000,	/* guest finished a subtest, wants the next one */
	SYNC_HOST_CHECK,	/* gpa, size, pattern: host checks its mapping */
	SYNC_CONVERT,		/* gpa, size, to_shared: host converts */
	SYNC_PUNCH,		/* gpa, size: host punches the gmem behind gpa */
	SYNC_FAIL,		/* step, gpa, expected, got */
	SYNC_HOST_NO_ACCESS,	/* gpa, size: host must not fault these in (-m) */
};

/* Steps, reported in SYNC_FAIL so a failure says where it happened. */
enum {
	STEP_INITIAL = 1,
	STEP_AFTER_FILL,
	STEP_CONVERTED,
	STEP_NEIGHBOUR_BEFORE,
	STEP_NEIGHBOUR_AFTER,
	STEP_PUNCHED,
	STEP_NOT_PUNCHED,
	STEP_HYPERCALL,
};

static const char *const step_names[] = {
	[STEP_INITIAL] = "initial contents",
	[STEP_AFTER_FILL] = "read back after write",
	[STEP_CONVERTED] = "converted range after conversion",
	[STEP_NEIGHBOUR_BEFORE] = "page before the range",
	[STEP_NEIGHBOUR_AFTER] = "page after the range",
	[STEP_PUNCHED] = "page whose gmem was punched",
	[STEP_NOT_PUNCHED] = "page whose gmem was not punched",
	[STEP_HYPERCALL] = "KVM_HC_MAP_GPA_RANGE return value",
};

/* Written by the host with sync_global_to_guest() before each subtest. */
static struct {
	uint64_t gpa;
	uint64_t size;
	uint64_t to_shared;	/* direction: private->shared if set */
	uint64_t guest_initiated;
	uint64_t done;
	uint64_t inplace;	/* -m: shared and private are the same pages */
	uint8_t old_shared;	/* host's shared contents before the subtest */
	uint8_t guest_shared;	/* written by the guest while shared */
	uint8_t guest_private;	/* written by the guest while private */
} params;

static uint64_t rep8(uint8_t p)
{
	return p * 0x0101010101010101ull;
}

static bool guest_check(uint64_t step, uint64_t gpa, uint64_t size, uint8_t pattern)
{
	volatile uint64_t *mem = (volatile uint64_t *)gpa;
	uint64_t want = rep8(pattern);
	uint64_t i, got;

	for (i = 0; i < size / 8; i++) {
		got = mem[i];
		if (got != want) {
			GUEST_SYNC5(SYNC_FAIL, step, gpa + i * 8, want, got);
			return false;
		}
	}
	return true;
}

static bool guest_convert(uint64_t gpa, uint64_t size, bool to_shared, bool by_guest)
{
	uint64_t ret;

	if (!by_guest) {
		GUEST_SYNC4(SYNC_CONVERT, gpa, size, to_shared);
		return true;
	}
	ret = __kvm_hypercall_map_gpa_range(gpa, size,
					    to_shared ? KVM_MAP_GPA_RANGE_DECRYPTED :
							KVM_MAP_GPA_RANGE_ENCRYPTED);
	if (ret) {
		GUEST_SYNC5(SYNC_FAIL, STEP_HYPERCALL, gpa, 0, ret);
		return false;
	}
	return true;
}

static void host_check(uint64_t gpa, uint64_t size, uint8_t pattern)
{
	GUEST_SYNC4(SYNC_HOST_CHECK, gpa, size, pattern);
}

/*
 * [gpa, gpa + size) is private: the host's separate shared memory still
 * holds @shared_pattern or, in place, the host cannot fault it in.
 */
static void host_check_private(uint64_t gpa, uint64_t size, uint8_t shared_pattern)
{
	if (params.inplace)
		GUEST_SYNC3(SYNC_HOST_NO_ACCESS, gpa, size);
	else
		host_check(gpa, size, shared_pattern);
}

/*
 * Punch the gmem behind the first and last page of [gpa, gpa + size), all
 * private, and check that exactly those pages read back as zero.
 */
static bool guest_check_translation(uint64_t gpa, uint64_t size, uint8_t pattern)
{
	uint64_t last = gpa + size - PAGE_SIZE;

	GUEST_SYNC3(SYNC_PUNCH, gpa, PAGE_SIZE);
	if (last != gpa)
		GUEST_SYNC3(SYNC_PUNCH, last, PAGE_SIZE);
	if (!guest_check(STEP_PUNCHED, gpa, PAGE_SIZE, 0) ||
	    !guest_check(STEP_PUNCHED, last, PAGE_SIZE, 0))
		return false;
	if (size > 2 * PAGE_SIZE &&
	    !guest_check(STEP_NOT_PUNCHED, gpa + PAGE_SIZE, size - 2 * PAGE_SIZE, pattern))
		return false;
	return true;
}

/*
 * The window is the range plus one page on each side.  On entry the whole
 * window holds params.old_shared in the host mapping, its gmem is freshly
 * punched, and it is private for private->shared, shared otherwise.
 */
static void guest_private_to_shared(uint64_t gpa, uint64_t size, bool by_guest)
{
	uint64_t before = gpa - PAGE_SIZE, after = gpa + size;
	uint64_t wsize = size + 2 * PAGE_SIZE;
	uint8_t s0 = params.old_shared, s1 = params.guest_shared, p1 = params.guest_private;
	bool inplace = params.inplace;

	/* In place, what a page holds right after a conversion is unspecified. */
	if (!inplace && !guest_check(STEP_INITIAL, before, wsize, 0))
		return;
	memset((void *)before, p1, wsize);
	if (!guest_check(STEP_AFTER_FILL, before, wsize, p1))
		return;
	host_check_private(before, wsize, s0);

	if (!guest_convert(gpa, size, true, by_guest))
		return;

	if ((!inplace && !guest_check(STEP_CONVERTED, gpa, size, s0)) ||
	    !guest_check(STEP_NEIGHBOUR_BEFORE, before, PAGE_SIZE, p1) ||
	    !guest_check(STEP_NEIGHBOUR_AFTER, after, PAGE_SIZE, p1))
		return;
	memset((void *)gpa, s1, size);
	if (!guest_check(STEP_AFTER_FILL, gpa, size, s1))
		return;
	host_check(gpa, size, s1);
	host_check_private(before, PAGE_SIZE, s0);
	host_check_private(after, PAGE_SIZE, s0);

	/* The neighbours are still private and still translate correctly. */
	if (!guest_check_translation(before, PAGE_SIZE, p1))
		return;
	guest_check_translation(after, PAGE_SIZE, p1);
}

static void guest_shared_to_private(uint64_t gpa, uint64_t size, bool by_guest)
{
	uint64_t before = gpa - PAGE_SIZE, after = gpa + size;
	uint64_t wsize = size + 2 * PAGE_SIZE;
	uint8_t s0 = params.old_shared, s1 = params.guest_shared, p1 = params.guest_private;

	if (!guest_check(STEP_INITIAL, before, wsize, s0))
		return;
	memset((void *)before, s1, wsize);
	if (!guest_check(STEP_AFTER_FILL, before, wsize, s1))
		return;
	host_check(before, wsize, s1);

	if (!guest_convert(gpa, size, false, by_guest))
		return;

	/* Fresh private memory, not the shared contents (unspecified in place). */
	if ((!params.inplace && !guest_check(STEP_CONVERTED, gpa, size, 0)) ||
	    !guest_check(STEP_NEIGHBOUR_BEFORE, before, PAGE_SIZE, s1) ||
	    !guest_check(STEP_NEIGHBOUR_AFTER, after, PAGE_SIZE, s1))
		return;
	memset((void *)gpa, p1, size);
	if (!guest_check(STEP_AFTER_FILL, gpa, size, p1))
		return;
	/* Private writes never show through the shared mapping. */
	host_check(before, PAGE_SIZE, s1);
	host_check_private(gpa, size, s1);
	host_check(after, PAGE_SIZE, s1);

	guest_check_translation(gpa, size, p1);
}

static void guest_code(void)
{
	for (;;) {
		GUEST_SYNC1(SYNC_NEXT);
		if (params.done)
			break;
		if (params.to_shared)
			guest_private_to_shared(params.gpa, params.size, params.guest_initiated);
		else
			guest_shared_to_private(params.gpa, params.size, params.guest_initiated);
	}
	GUEST_DONE();
}

/* ---- host ---- */

struct ctx {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	int gmem_fd;
	uint64_t gmem_offset;
	uint8_t *data_hva;	/* the host's shared view of DATA_GPA */
	void *gmem_map;		/* -m: the guest_memfd's mapping (GMEM_SIZE) */
	bool failed;	/* current subtest failed a check */
};

#include "gmem_conv_util.h"

/* In place (-m), the host may not fault in private pages through the mapping. */
static void host_check_no_access(struct ctx *c, uint64_t gpa, uint64_t size)
{
	uint64_t i;

	for (i = 0; i < size; i += PAGE_SIZE) {
		if (!madvise(c->data_hva + (gpa - DATA_GPA) + i, PAGE_SIZE, MADV_POPULATE_READ)) {
			fail(c, "host faulted in private gpa 0x%lx through the guest_memfd mapping",
			     gpa + i);
			return;
		}
		if (errno != EFAULT) {
			fail(c, "madvise(MADV_POPULATE_READ) of private gpa 0x%lx: %s, expected EFAULT",
			     gpa + i, strerror(errno));
			return;
		}
	}
}

static void handle_hypercall(struct ctx *c)
{
	struct kvm_run *run = c->vcpu->run;
	uint64_t gpa = run->hypercall.args[0];
	uint64_t size = run->hypercall.args[1] * PAGE_SIZE;
	bool private = run->hypercall.args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED;

	if (run->hypercall.nr != KVM_HC_MAP_GPA_RANGE) {
		fail(c, "unexpected hypercall %llu", run->hypercall.nr);
		run->hypercall.ret = -EINVAL;
		return;
	}
	run->hypercall.ret = set_attrs(c, gpa, size, private) ? -EINVAL : 0;
}

/*
 * Run the vCPU until the guest asks for the next subtest (0), says it is done
 * (1), or something unrecoverable happens (-1).
 */
static int run_until_next(struct ctx *c)
{
	struct kvm_run *run = c->vcpu->run;
	struct ucall uc;
	int r;

	for (;;) {
		r = _vcpu_run(c->vcpu);
		if (r) {
			fail(c, "KVM_RUN failed: %s (exit reason %u: %s)", strerror(errno),
			     run->exit_reason, exit_reason_str(run->exit_reason));
			return -1;
		}
		if (run->exit_reason == KVM_EXIT_HYPERCALL) {
			handle_hypercall(c);
			continue;
		}
		if (run->exit_reason != KVM_EXIT_IO) {
			fail(c, "unexpected exit reason %u (%s)", run->exit_reason,
			     exit_reason_str(run->exit_reason));
			return -1;
		}
		switch (get_ucall(c->vcpu, &uc)) {
		case UCALL_SYNC:
			switch (uc.args[0]) {
			case SYNC_NEXT:
				return 0;
			case SYNC_HOST_CHECK:
				host_check_mem(c, uc.args[1], uc.args[2], uc.args[3]);
				break;
			case SYNC_CONVERT:
				set_attrs(c, uc.args[1], uc.args[2], !uc.args[3]);
				break;
			case SYNC_PUNCH:
				host_punch(c, uc.args[1], uc.args[2]);
				break;
			case SYNC_HOST_NO_ACCESS:
				host_check_no_access(c, uc.args[1], uc.args[2]);
				break;
			case SYNC_FAIL:
				fail(c, "guest: %s: gpa 0x%lx reads 0x%lx, expected 0x%lx",
				     uc.args[1] < ARRAY_SIZE(step_names) && step_names[uc.args[1]] ?
				     step_names[uc.args[1]] : "?",
				     uc.args[2], uc.args[4], uc.args[3]);
				break;
			default:
				fail(c, "unknown sync 0x%lx", uc.args[0]);
				return -1;
			}
			break;
		case UCALL_DONE:
			return 1;
		case UCALL_ABORT:
			fail(c, "guest assert: %s:%ld: %s", (const char *)uc.args[GUEST_FILE],
			     uc.args[GUEST_LINE], uc.buffer);
			return -1;
		default:
			fail(c, "unknown ucall 0x%lx", uc.cmd);
			return -1;
		}
	}
}

/* The data slot: anonymous shared memory, or (-m) the guest_memfd's own mapping. */
static void add_data_slot(struct ctx *c)
{
	c->gmem_fd = snph_vm_create_guest_memfd(c->vm, GMEM_SIZE, gmem_create_flags | gmem_mmap_flags);
	if (!gmem_mmap) {
		snph_vm_mem_add(c->vm, VM_MEM_SRC_ANONYMOUS, DATA_GPA, DATA_SLOT,
				SLOT_SIZE / PAGE_SIZE, KVM_MEM_GUEST_MEMFD, c->gmem_fd, c->gmem_offset);
		c->data_hva = addr_gpa2hva(c->vm, DATA_GPA);
		return;
	}
	c->gmem_map = mmap(NULL, GMEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c->gmem_fd, 0);
	TEST_ASSERT(c->gmem_map != MAP_FAILED, "mmap(guest_memfd) failed: %s", strerror(errno));
	c->data_hva = (uint8_t *)c->gmem_map + c->gmem_offset;
	snph_vm_set_user_memory_region2(c->vm, DATA_SLOT, KVM_MEM_GUEST_MEMFD, DATA_GPA, SLOT_SIZE,
					c->data_hva, c->gmem_fd, c->gmem_offset);
}

static void test_conversions_at_offset(uint64_t off, unsigned int *pattern_seed)
{
	struct ctx c = { .gmem_offset = off };
	bool dead = false;
	unsigned int ri, dir, init;
	char name[128];

	c.vm = snph_vm_create_type_with_one_vcpu(KVM_X86_SW_PROTECTED_VM, &c.vcpu, guest_code);
	vm_enable_cap(c.vm, KVM_CAP_EXIT_HYPERCALL, BIT_ULL(KVM_HC_MAP_GPA_RANGE));
	add_data_slot(&c);
	virt_map(c.vm, DATA_GPA, DATA_GPA, SLOT_SIZE / PAGE_SIZE);

	if (run_until_next(&c))
		dead = true;

	for (ri = 0; ri < NR_RANGES; ri++) {
		for (dir = 0; dir < 2; dir++) {
			for (init = 0; init < 2; init++) {
				const struct range_kind *rk = &range_kinds[ri];
				uint64_t gpa = DATA_GPA + rk->start;
				uint64_t before = gpa - PAGE_SIZE, wsize = rk->size + 2 * PAGE_SIZE;
				unsigned int n = (*pattern_seed)++;

				snprintf(name, sizeof(name), "%soffset_0x%lx_range_%s_%s_%s",
					 gmem_mmap ? "mmap_" : "", off, rk->name,
					 dir ? "shared_to_private" : "private_to_shared",
					 init ? "guest" : "host");
				if (dead) {
					ksft_print_msg("%s: not run, the VM is unusable after an earlier failure\n",
						       name);
					ksft_test_result_fail("%s\n", name);
					continue;
				}
				c.failed = false;

				/* Clean slate: all shared, gmem empty, known shared contents. */
				set_attrs(&c, DATA_GPA, SLOT_SIZE, false);
				host_punch(&c, DATA_GPA, SLOT_SIZE);
				params.old_shared = 0x10 + (n % 0x30);
				params.guest_shared = 0x50 + (n % 0x30);
				params.guest_private = 0x90 + (n % 0x30);
				memset(c.data_hva + (before - DATA_GPA), params.old_shared, wsize);
				if (!dir)
					set_attrs(&c, before, wsize, true);

				params.gpa = gpa;
				params.size = rk->size;
				params.to_shared = !dir;
				params.guest_initiated = init;
				params.done = 0;
				params.inplace = gmem_mmap;
				sync_global_to_guest(c.vm, params);

				if (!c.failed && run_until_next(&c))
					dead = true;
				ksft_test_result(!c.failed, "%s\n", name);
			}
		}
	}

	if (!dead) {
		params.done = 1;
		sync_global_to_guest(c.vm, params);
		if (run_until_next(&c) != 1)
			ksft_print_msg("offset 0x%lx: guest did not finish cleanly\n", off);
	}
	kvm_vm_free(c.vm);
	if (c.gmem_map)
		munmap(c.gmem_map, GMEM_SIZE);
	close(c.gmem_fd);
}

static int gmem_bind(struct kvm_vm *vm, uint32_t slot, uint64_t gpa, uint64_t size, void *hva,
		int fd, uint64_t off)
{
	return __snph_vm_set_user_memory_region2(vm, slot, KVM_MEM_GUEST_MEMFD, gpa, size, hva,
						 fd, off);
}

static void unbind(struct kvm_vm *vm, uint32_t slot, uint64_t gpa)
{
	snph_vm_set_user_memory_region2(vm, slot, KVM_MEM_GUEST_MEMFD, gpa, 0, NULL, -1, 0);
}

static void expect_accept(struct kvm_vm *vm, uint32_t slot, uint64_t gpa, uint64_t size,
			  void *hva, int fd, uint64_t off, const char *what, bool keep)
{
	int r = gmem_bind(vm, slot, gpa, size, hva, fd, off);

	if (r)
		ksft_print_msg("binding 0x%lx bytes at gmem offset 0x%lx failed: %s\n",
			       size, off, strerror(errno));
	ksft_test_result(!r, "offset_0x%lx_%s_accepted\n", off, what);
	if (!r && !keep)
		unbind(vm, slot, gpa);
}

static void expect_reject(struct kvm_vm *vm, uint32_t slot, uint64_t gpa, uint64_t size,
			  void *hva, int fd, uint64_t off, const char *what, bool eexist_ok)
{
	int r = gmem_bind(vm, slot, gpa, size, hva, fd, off);
	int err = errno;
	bool ok = r == -1 && (err == EINVAL || (eexist_ok && err == EEXIST));

	if (!ok)
		ksft_print_msg("binding 0x%lx bytes at gmem offset 0x%lx: r = %d, errno = %s, expected EINVAL\n",
			       size, off, r, r ? strerror(err) : "none");
	if (!r)
		unbind(vm, slot, gpa);
	ksft_test_result(ok, "negative_offset_0x%lx_%s_einval\n", off, what);
}

/*
 * Binding checks for a misaligned offset X, with a gmem file of X + 4M and 2M
 * slots at 2M-aligned gpas.
 */
static void test_bindings_at_offset(uint64_t x)
{
	const uint64_t s = SZ_2M, file = x + 2 * s;
	const uint64_t gpa_a = DATA_GPA, gpa_b = DATA_GPA + SZ_8M;
	struct kvm_vm *vm = snph_vm_create_barebones_type(KVM_X86_SW_PROTECTED_VM);
	int fd = snph_vm_create_guest_memfd(vm, file, 0);
	void *hva = mmap(NULL, s, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	TEST_ASSERT(hva != MAP_FAILED, "mmap() failed");

	/* Unaligned: offset + size still inside the file. */
	expect_reject(vm, DATA_SLOT, gpa_a, s, hva, fd, x + 0x800, "unaligned", false);
	/* Page aligned, but the slot's end is one page past the end of the file. */
	expect_reject(vm, DATA_SLOT, gpa_a, s, hva, fd, x + s + PAGE_SIZE, "end_beyond_file", false);
	/* Starts at the end of the file. */
	expect_reject(vm, DATA_SLOT, gpa_a, s, hva, fd, file, "past_eof", false);
	/* offset + size wraps around to x. */
	expect_reject(vm, DATA_SLOT, gpa_a, s, hva, fd, x - s, "wraparound", false);

	/* A misaligned binding, kept, then one that overlaps its last page. */
	expect_accept(vm, DATA_SLOT, gpa_a, s, hva, fd, x, "bind_misaligned", true);
	expect_reject(vm, DATA_SLOT + 1, gpa_b, s, hva, fd, x + s - PAGE_SIZE, "overlapping_binding",
		      true);
	/* Adjacent to it and ending exactly at the end of the file. */
	expect_accept(vm, DATA_SLOT + 1, gpa_b, s, hva, fd, x + s, "bind_adjacent_exact_fit", false);

	unbind(vm, DATA_SLOT, gpa_a);
	close(fd);
	munmap(hva, s);
	kvm_vm_free(vm);
}

/*
 * -m: the creation flags that give an mmap()able guest_memfd whose shared
 * pages the host can fault in, or KSFT_SKIP with the reason.
 */
static uint64_t mmap_preflight(void)
{
#ifndef GUEST_MEMFD_FLAG_MMAP
	ksft_exit_skip("-m: built against UAPI headers without GUEST_MEMFD_FLAG_MMAP (no mmap()able guest_memfd)\n");
#else
	struct kvm_create_guest_memfd args = { .size = 2 * PAGE_SIZE };
	struct kvm_vm *vm = snph_vm_create_barebones_type(KVM_X86_SW_PROTECTED_VM);
	uint64_t offered = GUEST_MEMFD_FLAG_MMAP;	/* headers without the cap: just try */
	bool init_shared = false;
	void *mem;
	int fd, err;

#ifdef KVM_CAP_GUEST_MEMFD_FLAGS
	offered = vm_check_cap(vm, KVM_CAP_GUEST_MEMFD_FLAGS);
	if (!(offered & GUEST_MEMFD_FLAG_MMAP))
		ksft_exit_skip("-m: KVM_CAP_GUEST_MEMFD_FLAGS of a KVM_X86_SW_PROTECTED_VM is 0x%lx, without GUEST_MEMFD_FLAG_MMAP\n",
			       offered);
#endif
	args.flags = GUEST_MEMFD_FLAG_MMAP | gmem_create_flags;
#ifdef GUEST_MEMFD_FLAG_INIT_SHARED
	init_shared = offered & GUEST_MEMFD_FLAG_INIT_SHARED;
	if (init_shared)
		args.flags |= GUEST_MEMFD_FLAG_INIT_SHARED;
#endif
	fd = __vm_ioctl(vm, KVM_CREATE_GUEST_MEMFD, &args);
	if (fd < 0)
		ksft_exit_skip("-m: KVM_CREATE_GUEST_MEMFD(flags 0x%llx) on a KVM_X86_SW_PROTECTED_VM: %s\n",
			       args.flags, strerror(errno));
	mem = mmap(NULL, args.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	err = mem == MAP_FAILED ? errno : madvise(mem, args.size, MADV_POPULATE_WRITE) ? errno : 0;
	if (err)
		ksft_exit_skip("-m: the host cannot use a KVM_X86_SW_PROTECTED_VM's guest_memfd (flags 0x%llx; %s: %s): KVM keeps its pages private to the host%s\n",
			       args.flags, mem == MAP_FAILED ? "mmap" : "MADV_POPULATE_WRITE", strerror(err),
			       init_shared ? "" :
			       " (KVM_CAP_GUEST_MEMFD_FLAGS offers no GUEST_MEMFD_FLAG_INIT_SHARED for it)");
	munmap(mem, args.size);
	close(fd);
	kvm_vm_free(vm);
	return args.flags & ~gmem_create_flags;
#endif
}

int main(int argc, char *argv[])
{
	unsigned int seed = 0, i;
	int opt;

	while ((opt = getopt(argc, argv, "f:m")) != -1) {
		if (opt == 'f') {
			gmem_create_flags = strtoull(optarg, NULL, 0);
		} else if (opt == 'm') {
			gmem_mmap = true;
		} else {
			fprintf(stderr, "usage: %s [-f GMEM_CREATE_FLAGS] [-m]\n", argv[0]);
			exit(KSFT_FAIL);
		}
	}

	ksft_print_header();
	if (gmem_create_flags)
		ksft_print_msg("guest_memfd flags 0x%lx for the data slots\n", gmem_create_flags);
	SNPH_REQUIRE(SNPH_GMEM_MISSING,
		     SNPH_ARGS(vm_create_shape_with_one_vcpu, SNPH_VM_CREATE_SHAPE_WITH_ONE_VCPU_ARGS, 3),
		     SNPH_ARGS(vm_create_barebones_type, SNPH_VM_CREATE_BAREBONES_TYPE_ARGS, 1),
		     SNPH_ARGS(__vm_set_user_memory_region2, SNPH___VM_SET_USER_MEMORY_REGION2_ARGS, 8),
		     SNPH_ARGS(vm_set_user_memory_region2, SNPH_VM_SET_USER_MEMORY_REGION2_ARGS, 8));
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_GUEST_MEMFD));
	TEST_REQUIRE(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM));
	TEST_REQUIRE(kvm_check_cap(KVM_CAP_EXIT_HYPERCALL) & BIT(KVM_HC_MAP_GPA_RANGE));
	TEST_REQUIRE(kvm_check_cap(KVM_CAP_MEMORY_ATTRIBUTES) & KVM_MEMORY_ATTRIBUTE_PRIVATE);
	if (gmem_mmap) {
		gmem_mmap_flags = mmap_preflight();
		ksft_print_msg("shared view: the guest_memfd's own mmap (flags 0x%lx added)\n",
			       gmem_mmap_flags);
	}

	ksft_set_plan(NR_CONV_TESTS + (gmem_mmap ? 0 : NR_NEG_TESTS));

	for (i = 0; i < NR_OFFSETS; i++)
		test_conversions_at_offset(gmem_offsets[i], &seed);
	for (i = 0; i < NR_OFFSETS && !gmem_mmap; i++)
		if (gmem_offsets[i])
			test_bindings_at_offset(gmem_offsets[i]);

	ksft_finished();
}
