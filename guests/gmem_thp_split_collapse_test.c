// SPDX-License-Identifier: GPL-2.0
/*
 * gmem_thp_split_collapse_test: THP split and collapse of the shared backing
 * of a guest_memfd memslot, interleaved with private<->shared conversions.
 *
 * Part of snp-harness; built inside tools/testing/selftests/kvm of the kernel
 * tree under test, against that tree's UAPI headers and selftests library.
 *
 * Setup: a KVM_X86_SW_PROTECTED_VM with one 4 MiB memslot (two 2 MiB chunks,
 * A and B) at a 2 MiB aligned GPA.  Shared memory is anonymous THP
 * (VM_MEM_SRC_ANONYMOUS_THP: the library aligns the mapping to 2 MiB and
 * applies MADV_HUGEPAGE); private memory comes from a guest_memfd.  The guest
 * converts ranges with KVM_HC_MAP_GPA_RANGE; the host sets the memory
 * attributes and fallocate()s / punches the guest_memfd.
 *
 * Between phases the host forces, on the userspace range of the shared
 * mapping (exactly the memslot's 4 MiB):
 *   - a split: "<pid>,0x<start>,0x<end>" written to
 *     /sys/kernel/debug/split_huge_pages;
 *   - a collapse: madvise(MADV_COLLAPSE).
 * and checks AnonHugePages of that mapping in /proc/self/smaps, and that the
 * data the guest and host wrote is intact, seen from both sides.
 *
 * Subtests (names and order fixed):
 *   1 fault_in_thp            the guest writes the whole slot while shared:
 *                             AnonHugePages == 4096 kB, the host sees the data
 *   2 split_thp               debugfs split: AnonHugePages == 0, host data intact,
 *                             thp_split_page grew by >= the THPs split
 *   3 data_intact_after_split the guest reads its data back after the split
 *   4 split_then_convert      4K (in A) + 2M (B) private; private data
 *                             correct; the shared view (host) and the shared
 *                             remainder (guest) untouched; back to shared,
 *                             the shared data survived; guest rewrite seen by
 *                             the host
 *   5 collapse_thp            MADV_COLLAPSE: AnonHugePages == 4096 kB, host data
 *                             intact, thp_collapse_alloc grew by >= 2
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
 * KVM_X86_SW_PROTECTED_VM, guest_memfd, THP (or THP "never"), or a writable
 * /sys/kernel/debug/split_huge_pages.  If MADV_COLLAPSE fails with EINVAL,
 * subtests 5, 6, 7 and 9 skip with the reason, and 8 skips because there is
 * no THP left to split.  Other failures are "not ok" with a "# <name>: ..."
 * line giving the reason.
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

#include <linux/kvm_para.h>
#include <linux/sizes.h>

#include <test_util.h>
#include <kvm_util.h>
#include <processor.h>

#include "kselftest.h"
#include "snph_api.h"
#include "gmem_thp_util.h"



#define DATA_SLOT		10
#define DATA_GPA		((uint64_t)(1ull << 32))
#define DATA_SIZE		((uint64_t)(2 * SZ_2M))
#define CHUNK_A			(DATA_GPA)
#define CHUNK_B			(DATA_GPA + SZ_2M)
#define NR_THPS			(DATA_SIZE / SZ_2M)

/* Byte patterns: shared data the guest/host write, private data. */
#define P_INIT			0x11
#define P_SHARED2		0x22
#define P_SHARED3		0x33
#define P_PRIV1			0xa1
#define P_PRIV2			0xa2
#define P_PRIV3			0xa3
#define P_PRIV4			0xa4

/* Hypercall flags, as in private_mem_conversions_test (KVM ignores them). */
#define MAP_GPA_SHARED		BIT(1)
#define MAP_GPA_DO_FALLOCATE	BIT(2)

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

/* ---- guest ---- */

static uint64_t guest_bad;	/* mismatched 8-byte words since the last sync */
static uint64_t guest_first_bad;	/* gpa of the first of them */

static inline uint64_t pattern64(uint8_t p)
{
	return 0x0101010101010101ull * p;
}

static void guest_fill(uint64_t gpa, uint64_t size, uint8_t p)
{
	volatile uint64_t *q = (volatile uint64_t *)gpa;
	uint64_t v = pattern64(p), i;

	for (i = 0; i < size / 8; i++)
		q[i] = v;
}

static void guest_check(uint64_t gpa, uint64_t size, uint8_t p)
{
	volatile uint64_t *q = (volatile uint64_t *)gpa;
	uint64_t v = pattern64(p), i;

	for (i = 0; i < size / 8; i++) {
		if (q[i] != v) {
			if (!guest_bad)
				guest_first_bad = gpa + i * 8;
			guest_bad++;
		}
	}
}

static void guest_sync(uint64_t stage)
{
	GUEST_SYNC3(stage, guest_bad, guest_first_bad);
	guest_bad = 0;
	guest_first_bad = 0;
}

static void guest_map(uint64_t gpa, uint64_t size, bool shared)
{
	kvm_hypercall_map_gpa_range(gpa, size,
				    (shared ? MAP_GPA_SHARED : 0) | MAP_GPA_DO_FALLOCATE);
}

static void guest_code(void)
{
	/* fault_in_thp: memory is shared by default. */
	guest_fill(DATA_GPA, DATA_SIZE, P_INIT);
	guest_check(DATA_GPA, DATA_SIZE, P_INIT);
	guest_sync(ST_FAULTED);

	/* The host split the THPs. */
	guest_check(DATA_GPA, DATA_SIZE, P_INIT);
	guest_sync(ST_SPLIT_READ);

	/* split_then_convert: one 4K page in A and all of B private. */
	guest_map(CHUNK_A + PAGE_SIZE, PAGE_SIZE, false);
	guest_map(CHUNK_B, SZ_2M, false);
	guest_fill(CHUNK_A + PAGE_SIZE, PAGE_SIZE, P_PRIV1);
	guest_fill(CHUNK_B, SZ_2M, P_PRIV1);
	guest_check(CHUNK_A + PAGE_SIZE, PAGE_SIZE, P_PRIV1);
	guest_check(CHUNK_B, SZ_2M, P_PRIV1);
	guest_check(CHUNK_A, PAGE_SIZE, P_INIT);
	guest_check(CHUNK_A + 2 * PAGE_SIZE, SZ_2M - 2 * PAGE_SIZE, P_INIT);
	guest_sync(ST_SPLIT_PRIVATE);
	guest_map(CHUNK_A + PAGE_SIZE, PAGE_SIZE, true);
	guest_map(CHUNK_B, SZ_2M, true);
	guest_check(DATA_GPA, DATA_SIZE, P_INIT);
	guest_fill(DATA_GPA, DATA_SIZE, P_SHARED2);
	guest_sync(ST_SPLIT_SHARED);

	/* The host collapsed the range. */
	guest_check(DATA_GPA, DATA_SIZE, P_SHARED2);
	guest_sync(ST_COLLAPSE_READ);

	/* collapse_then_convert: all of A and one 4K page in B private. */
	guest_map(CHUNK_A, SZ_2M, false);
	guest_map(CHUNK_B + PAGE_SIZE, PAGE_SIZE, false);
	guest_fill(CHUNK_A, SZ_2M, P_PRIV2);
	guest_fill(CHUNK_B + PAGE_SIZE, PAGE_SIZE, P_PRIV2);
	guest_check(CHUNK_A, SZ_2M, P_PRIV2);
	guest_check(CHUNK_B + PAGE_SIZE, PAGE_SIZE, P_PRIV2);
	guest_check(CHUNK_B, PAGE_SIZE, P_SHARED2);
	guest_check(CHUNK_B + 2 * PAGE_SIZE, SZ_2M - 2 * PAGE_SIZE, P_SHARED2);
	guest_sync(ST_COLLAPSE_PRIVATE);
	guest_map(CHUNK_A, SZ_2M, true);
	guest_map(CHUNK_B + PAGE_SIZE, PAGE_SIZE, true);
	guest_check(DATA_GPA, DATA_SIZE, P_SHARED2);
	guest_fill(DATA_GPA, DATA_SIZE, P_SHARED3);
	guest_sync(ST_COLLAPSE_SHARED);

	/* split_while_private: A private across the split. */
	guest_map(CHUNK_A, SZ_2M, false);
	guest_fill(CHUNK_A, SZ_2M, P_PRIV3);
	guest_check(CHUNK_A, SZ_2M, P_PRIV3);
	guest_check(CHUNK_B, SZ_2M, P_SHARED3);
	guest_sync(ST_PRIV_BEFORE_SPLIT);
	guest_check(CHUNK_A, SZ_2M, P_PRIV3);
	guest_check(CHUNK_B, SZ_2M, P_SHARED3);
	guest_map(CHUNK_A, SZ_2M, true);
	guest_check(DATA_GPA, DATA_SIZE, P_SHARED3);
	guest_sync(ST_SPLIT_WHILE_PRIVATE);

	/* collapse_while_private: B private across the collapse. */
	guest_map(CHUNK_B, SZ_2M, false);
	guest_fill(CHUNK_B, SZ_2M, P_PRIV4);
	guest_check(CHUNK_B, SZ_2M, P_PRIV4);
	guest_check(CHUNK_A, SZ_2M, P_SHARED3);
	guest_sync(ST_PRIV_BEFORE_COLLAPSE);
	guest_check(CHUNK_B, SZ_2M, P_PRIV4);
	guest_check(CHUNK_A, SZ_2M, P_SHARED3);
	guest_map(CHUNK_B, SZ_2M, true);
	guest_check(DATA_GPA, DATA_SIZE, P_SHARED3);
	guest_sync(ST_COLLAPSE_WHILE_PRIVATE);

	GUEST_DONE();
}

/* ---- host ---- */

static struct kvm_vm *vm;
static struct kvm_vcpu *vcpu;
static uint8_t *hva;		/* host mapping of DATA_GPA, 2M aligned */

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

static void handle_map_gpa_range(struct kvm_run *run)
{
	uint64_t gpa = run->hypercall.args[0];
	uint64_t size = run->hypercall.args[1] * PAGE_SIZE;
	bool shared = run->hypercall.args[2] & MAP_GPA_SHARED;

	TEST_ASSERT(run->hypercall.nr == KVM_HC_MAP_GPA_RANGE,
		    "Wanted MAP_GPA_RANGE (%u), got '%llu'",
		    KVM_HC_MAP_GPA_RANGE, run->hypercall.nr);
	if (run->hypercall.args[2] & MAP_GPA_DO_FALLOCATE)
		snph_vm_guest_mem_fallocate(vm, gpa, size, shared);
	snph_vm_set_memory_attributes(vm, gpa, size,
				 shared ? 0 : KVM_MEMORY_ATTRIBUTE_PRIVATE);
	run->hypercall.ret = 0;
}

/*
 * Run the guest to its next sync, which must be `stage`.  Returns the number
 * of mismatched 8-byte words the guest found since its previous sync.
 */
static uint64_t run_to(enum stage stage)
{
	struct kvm_run *run = vcpu->run;
	struct ucall uc;

	for (;;) {
		vcpu_run(vcpu);
		if (run->exit_reason == KVM_EXIT_HYPERCALL) {
			handle_map_gpa_range(run);
			continue;
		}
		TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
		switch (get_ucall(vcpu, &uc)) {
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
			break;
		case UCALL_SYNC:
			TEST_ASSERT(uc.args[0] == stage, "Guest synced at stage %lu, expected %u",
				    uc.args[0], stage);
			if (uc.args[1])
				ksft_print_msg("guest stage %u: %lu mismatched words, first at gpa 0x%lx\n",
					       stage, uc.args[1], uc.args[2]);
			return uc.args[1];
		case UCALL_DONE:
			TEST_ASSERT(stage == ST_DONE, "Guest done at stage %u", stage);
			return 0;
		default:
			TEST_FAIL("Unknown ucall 0x%lx.", uc.cmd);
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
	uint64_t bad = run_to(stage);

	check(v, !bad, "guest: %lu mismatched words %s", bad, what);
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
	int memfd;

	SNPH_REQUIRE(SNPH_GMEM_MISSING,
		     SNPH_ARGS(vm_create_shape_with_one_vcpu, SNPH_VM_CREATE_SHAPE_WITH_ONE_VCPU_ARGS, 3),
		     SNPH_ARGS(vm_guest_mem_fallocate, SNPH_VM_GUEST_MEM_FALLOCATE_ARGS, 4),
		     SNPH_ARGS(vm_set_memory_attributes, SNPH_VM_SET_MEMORY_ATTRIBUTES_ARGS, 4));
	TEST_REQUIRE(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SW_PROTECTED_VM));
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_GUEST_MEMFD));
	if (!thp_configured() || thp_never())
		ksft_exit_skip("THP not available (%s missing or [never])\n", THP_ENABLED);
	require_split_debugfs();

	ksft_print_header();
	ksft_set_plan(ARRAY_SIZE(subtests));

	vm = snph_vm_create_type_with_one_vcpu(KVM_X86_SW_PROTECTED_VM, &vcpu, guest_code);
	vm_enable_cap(vm, KVM_CAP_EXIT_HYPERCALL, BIT(KVM_HC_MAP_GPA_RANGE));
	memfd = snph_vm_create_guest_memfd(vm, DATA_SIZE, 0);
	snph_vm_mem_add(vm, VM_MEM_SRC_ANONYMOUS_THP, DATA_GPA, DATA_SLOT,
		   DATA_SIZE / vm->page_size, KVM_MEM_GUEST_MEMFD, memfd, 0);
	virt_map(vm, DATA_GPA, DATA_GPA, DATA_SIZE / vm->page_size);
	hva = addr_gpa2hva(vm, DATA_GPA);
	TEST_ASSERT(!((uintptr_t)hva & (SZ_2M - 1)), "host mapping %p not 2M aligned", hva);
	ksft_print_msg("pid %d, shared mapping 0x%lx-0x%lx, guest_memfd %d\n", getpid(),
		       (unsigned long)hva, (unsigned long)hva + DATA_SIZE, memfd);

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

	run_to(ST_DONE);
	kvm_vm_free(vm);
	close(memfd);

	ksft_finished();
	return 0;
}
