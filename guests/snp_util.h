/* SPDX-License-Identifier: GPL-2.0 */
/*
 * snp_util.h - SEV-SNP machinery shared by snp-harness's SNP guests
 * (guests/snp_*.c).  Everything is static inline so that each test, built
 * as its own program, compiles on its own and without unused warnings.
 *
 * SNP VM creation and launch come from the tree's selftest library where
 * its sev.h has SNP launch helpers (SNPH_HAVE_SNP_LIB, see snph_api.h).
 * Otherwise (a library with SEV and SEV-ES helpers only, as 6.12's) they
 * are done here, on the uAPI:
 *   KVM_CREATE_VM(KVM_X86_SNP_VM), KVM_SEV_INIT2, KVM_SEV_SNP_LAUNCH_START,
 *   KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) + KVM_SEV_SNP_LAUNCH_UPDATE(NORMAL) of
 *   every page the library allocated as protected (code, data, stack, page
 *   tables, descriptor tables), KVM_SEV_SNP_LAUNCH_FINISH;
 * that path needs the library shapes it was written against (SNPT_OWN_OK).
 * A library fitting neither makes snpt_require_snp() skip with the reason.
 * Memslot 0 (the library's code/data/page-table slot) is guest_memfd backed,
 * because an SNP guest's code and page tables must be private.
 *
 * Guest side: an SNP guest cannot use the library's ucall (port I/O, CPUID
 * and intercepted MSRs raise #VC, and there is no #VC handler), so it only
 * speaks the GHCB MSR protocol: Page State Change requests (one 4K page per
 * request; KVM forwards each as a KVM_HC_MAP_GPA_RANGE exit), termination
 * requests (KVM_SYSTEM_EVENT_SEV_TERM), plus PVALIDATE.  The tests build
 * their guest->host channel on top: a mailbox page in a non-guest_memfd
 * memslot and a "doorbell", a PSC request for a gpa outside every memslot
 * (SNPT_DOORBELL_GPA) that the host recognises and never turns into a
 * memory attribute change.
 *
 * Includers must include kvm_util.h, processor.h and sparsebit.h (and
 * <fcntl.h>, <errno.h>, <string.h>) first; sev.h comes from here, where the
 * library has it.
 */
#ifndef SNP_HARNESS_SNP_UTIL_H
#define SNP_HARNESS_SNP_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "kselftest.h"
#include "test_util.h"
#include "kvm_util.h"
#include "processor.h"
#include "sparsebit.h"
#include "snph_api.h"
#if SNPH_HAVE_SEV_H
#include "sev.h"
#endif

/* The library shapes each way of creating and launching an SNP VM calls. */
#define SNPT_LIB_OK	(SNPH_HAVE_SEV_H && SNPH_HAVE_SNP_LIB && SNPH_HAVE_VM_SHAPE_TYPE &&	\
			 SNPH___VM_CREATE_WITH_VCPUS_ARGS == 5)
#define SNPT_OWN_OK	(SNPH_HAVE_SEV_H && SNPH_HAVE_VM_SHAPE_TYPE &&			\
			 SNPH_____VM_CREATE_ARGS == 1 && SNPH_KVM_ARCH_VM_POST_CREATE_ARGS == 1 && \
			 SNPH_KVM_VM_ELF_LOAD_ARGS == 2 && SNPH_VM_VCPU_ADD_ARGS == 3 &&	\
			 SNPH_VM_MEM_ADD_ARGS == 8 && SNPH_VM_MEM_SET_PRIVATE_ARGS == 3 &&	\
			 SNPH_VM_SEV_IOCTL_ARGS == 3 && SNPH___VM_SEV_IOCTL_ARGS == 3 &&	\
			 SNPH_OPEN_SEV_DEV_PATH_OR_EXIT_ARGS == 0 &&				\
			 SNPH_HAVE_KVM_VM_GPA_TAG_MASK && SNPH_HAVE_KVM_VM_ARCH_SEV_FD &&	\
			 SNPH_HAVE_KVM_VM_ARCH_C_BIT && SNPH_HAVE_KVM_VM_ARCH_IS_PT_PROTECTED)

#if SNPH_HAVE_SNP_LIB
#define SNPT_API_MISSING								\
	SNPH_HAVE(SNPH_HAVE_SEV_H, "no sev.h"),						\
	SNPH_HAVE(SNPH_HAVE_VM_SHAPE_TYPE, "no struct vm_shape with a VM type"),	\
	SNPH_ARGS(__vm_create_with_vcpus, SNPH___VM_CREATE_WITH_VCPUS_ARGS, 5)
#else
#define SNPT_API_MISSING								\
	SNPH_HAVE(SNPH_HAVE_SEV_H, "no sev.h"),						\
	SNPH_HAVE(SNPH_HAVE_VM_SHAPE_TYPE, "no struct vm_shape with a VM type"),	\
	SNPH_ARGS(____vm_create, SNPH_____VM_CREATE_ARGS, 1),				\
	SNPH_ARGS(kvm_arch_vm_post_create, SNPH_KVM_ARCH_VM_POST_CREATE_ARGS, 1),	\
	SNPH_ARGS(kvm_vm_elf_load, SNPH_KVM_VM_ELF_LOAD_ARGS, 2),			\
	SNPH_ARGS(vm_vcpu_add, SNPH_VM_VCPU_ADD_ARGS, 3),				\
	SNPH_ARGS(vm_mem_add, SNPH_VM_MEM_ADD_ARGS, 8),					\
	SNPH_ARGS(vm_mem_set_private, SNPH_VM_MEM_SET_PRIVATE_ARGS, 3),			\
	SNPH_ARGS(vm_sev_ioctl, SNPH_VM_SEV_IOCTL_ARGS, 3),				\
	SNPH_ARGS(__vm_sev_ioctl, SNPH___VM_SEV_IOCTL_ARGS, 3),				\
	SNPH_ARGS(open_sev_dev_path_or_exit, SNPH_OPEN_SEV_DEV_PATH_OR_EXIT_ARGS, 0),	\
	SNPH_HAVE(SNPH_HAVE_KVM_VM_GPA_TAG_MASK, "no kvm_vm.gpa_tag_mask"),		\
	SNPH_HAVE(SNPH_HAVE_KVM_VM_ARCH_SEV_FD, "no kvm_vm_arch.sev_fd"),		\
	SNPH_HAVE(SNPH_HAVE_KVM_VM_ARCH_C_BIT, "no kvm_vm_arch.c_bit"),			\
	SNPH_HAVE(SNPH_HAVE_KVM_VM_ARCH_IS_PT_PROTECTED, "no kvm_vm_arch.is_pt_protected")
#endif

#define SNPT_DOORBELL_GPA	0x7fff000000ull		/* in no memslot */

/* GHCB MSR protocol (GHCB spec; arch/x86/include/asm/sev-common.h). */
#define SNPT_GHCB_INFO_MASK	0xfffull
#define SNPT_GHCB_PSC_REQ	0x014ull
#define SNPT_GHCB_PSC_RESP	0x015ull
#define SNPT_GHCB_TERM_REQ	0x100ull
#define SNPT_PSC_OP_PRIVATE	1ull
#define SNPT_PSC_OP_SHARED	2ull
#define SNPT_TERM_REASON_SET	0xfull	/* ours; KVM only logs it */

/* PVALIDATE (APM vol. 3). */
#define SNPT_PVALIDATE_FAIL_SIZEMISMATCH	6

/* SNP guest policy: bit 16 SMT allowed (6.12 KVM requires it), bit 17 MBO. */
#define SNPT_POLICY_SMT		(1ull << 16)
#define SNPT_POLICY_RSVD_MBO	(1ull << 17)

/* ---- guest: no ucall, no CPUID, no port I/O: every #VC is fatal ---- */

static inline uint64_t snpt_ghcb_msr_vmgexit(uint64_t val)
{
	wrmsr(MSR_AMD64_SEV_ES_GHCB, val);
	__asm__ __volatile__("rep; vmmcall" ::: "memory");
	return rdmsr(MSR_AMD64_SEV_ES_GHCB);
}

static inline void __attribute__((noreturn)) snpt_guest_terminate(uint64_t code)
{
	snpt_ghcb_msr_vmgexit(SNPT_GHCB_TERM_REQ | (SNPT_TERM_REASON_SET << 12) |
			      ((code & 0xff) << 16));
	for (;;)
		;
}

/* One 4K GHCB MSR Page State Change request; returns the response MSR. */
static inline uint64_t snpt_psc_msr(uint64_t gpa, uint64_t op)
{
	return snpt_ghcb_msr_vmgexit(SNPT_GHCB_PSC_REQ | (gpa & GENMASK_ULL(51, 12)) |
				     (op << 52));
}

static inline bool snpt_psc_resp_ok(uint64_t resp)
{
	return (resp & SNPT_GHCB_INFO_MASK) == SNPT_GHCB_PSC_RESP && !(resp >> 32);
}

/* Ring the host: a PSC request for SNPT_DOORBELL_GPA.  Terminates on error. */
static inline void snpt_ring_doorbell(void)
{
	if (!snpt_psc_resp_ok(snpt_psc_msr(SNPT_DOORBELL_GPA, SNPT_PSC_OP_SHARED)))
		snpt_guest_terminate(1);
}

/* Returns PVALIDATE's rax; *no_update = CF (the RMP was not changed). */
static inline uint64_t snpt_pvalidate(uint64_t gva, bool huge, bool validate, bool *no_update)
{
	uint64_t rax = gva;
	uint8_t cf;

	__asm__ __volatile__(".byte 0xf2, 0x0f, 0x01, 0xff\n\t"	/* PVALIDATE */
			     "setc %[cf]\n\t"
			     : "+a"(rax), [cf] "=qm"(cf)
			     : "c"((uint64_t)huge), "d"((uint64_t)validate)
			     : "memory", "cc");
	*no_update = cf;
	return rax & 0xffffffffull;
}

/* ---- host ---- */

/*
 * Skips (KSFT_SKIP, with the reason) unless KVM offers KVM_X86_SNP_VM,
 * /dev/sev can be opened, and KVM has guest_memfd, the private memory
 * attribute and KVM_HC_MAP_GPA_RANGE exits (includers need linux/kvm_para.h).
 */
static inline void snpt_require_snp(void)
{
	int fd;

	SNPH_REQUIRE(SNPH_GMEM_MISSING, SNPT_API_MISSING);
	if (!(kvm_check_cap(KVM_CAP_VM_TYPES) & BIT(KVM_X86_SNP_VM)))
		ksft_exit_skip("KVM_X86_SNP_VM not in KVM_CAP_VM_TYPES (no SEV-SNP in this host/KVM)\n");
	fd = open("/dev/sev", O_RDWR);
	if (fd < 0)
		ksft_exit_skip("cannot open /dev/sev: %s\n", strerror(errno));
	close(fd);
	/* What every SNP conversion test here needs besides: private memory and PSC exits. */
	if (!kvm_has_cap(KVM_CAP_GUEST_MEMFD))
		ksft_exit_skip("KVM_CAP_GUEST_MEMFD not supported (no guest_memfd)\n");
	if (!(kvm_check_cap(KVM_CAP_MEMORY_ATTRIBUTES) & KVM_MEMORY_ATTRIBUTE_PRIVATE))
		ksft_exit_skip("KVM_MEMORY_ATTRIBUTE_PRIVATE not supported\n");
	if (!(kvm_check_cap(KVM_CAP_EXIT_HYPERCALL) & BIT(KVM_HC_MAP_GPA_RANGE)))
		ksft_exit_skip("KVM_CAP_EXIT_HYPERCALL lacks KVM_HC_MAP_GPA_RANGE\n");
}

#if SNPT_LIB_OK
/*
 * The tree's selftests library knows SNP: it backs slot 0 with
 * guest_memfd, does KVM_SEV_INIT2 and the SNP launch itself.  slot0_pages
 * is unused: the library sizes slot 0 itself, plus extra_pages.
 */
static inline struct kvm_vm *snpt_vm_create(struct kvm_vcpu **vcpu, void *guest_code,
					    uint64_t slot0_pages, uint64_t extra_pages)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SNP_VM,
	};
	struct kvm_vcpu *cpus[1];
	struct kvm_vm *vm;

	(void)slot0_pages;
	vm = __vm_create_with_vcpus(shape, 1, extra_pages, guest_code, cpus);
	*vcpu = cpus[0];
	return vm;
}

static inline void snpt_launch(struct kvm_vm *vm)
{
	snp_vm_launch_start(vm, snp_default_policy());
	snp_vm_launch_update(vm);
	snp_vm_launch_finish(vm);
}
#elif !SNPH_HAVE_SNP_LIB && SNPT_OWN_OK
/*
 * The library has SEV/SEV-ES helpers only; SNP is done here.  Slot 0 gets
 * slot0_pages pages (code, data, page tables, stack); extra_pages is
 * unused (the library path's headroom).
 */
static inline struct kvm_vm *snpt_vm_create(struct kvm_vcpu **vcpu, void *guest_code,
					    uint64_t slot0_pages, uint64_t extra_pages)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = KVM_X86_SNP_VM,
	};
	struct kvm_sev_init init = { 0 };
	struct kvm_vm *vm;
	int i;

	(void)extra_pages;
	vm = ____vm_create(shape);
	/* The 6.12 library sets these for SEV and SEV-ES VMs only. */
	if (vm->arch.sev_fd < 0)
		vm->arch.sev_fd = open_sev_dev_path_or_exit();
	vm->arch.c_bit = BIT_ULL(this_cpu_property(X86_PROPERTY_SEV_C_BIT));
	vm->gpa_tag_mask = vm->arch.c_bit;

	/*
	 * As __vm_create(), but slot 0 is guest_memfd backed (an SNP guest's
	 * code and page tables must be private) and no ucall MMIO is set up.
	 */
	vm_mem_add(vm, VM_MEM_SRC_ANONYMOUS, 0, 0, slot0_pages, KVM_MEM_GUEST_MEMFD, -1, 0);
	for (i = 0; i < NR_MEM_REGIONS; i++)
		vm->memslots[i] = 0;
	kvm_vm_elf_load(vm, program_invocation_name);
	kvm_arch_vm_post_create(vm);	/* irqchip, descriptor tables, TSC */

	vm_sev_ioctl(vm, KVM_SEV_INIT2, &init);

	*vcpu = vm_vcpu_add(vm, 0, guest_code);
	return vm;
}

static inline void snpt_launch_update_range(struct kvm_vm *vm, uint64_t gpa, uint64_t size)
{
	struct kvm_sev_snp_launch_update upd = {
		.gfn_start = gpa >> PAGE_SHIFT,
		.uaddr = (uint64_t)addr_gpa2hva(vm, gpa),
		.len = size,
		.type = KVM_SEV_SNP_PAGE_TYPE_NORMAL,
	};
	int r;

	vm_mem_set_private(vm, gpa, size);
	while (upd.len) {
		r = __vm_sev_ioctl(vm, KVM_SEV_SNP_LAUNCH_UPDATE, &upd);
		if (r && errno == EAGAIN)
			continue;
		TEST_ASSERT(!r, "KVM_SEV_SNP_LAUNCH_UPDATE(gpa 0x%lx, len 0x%lx) failed: r %d errno %d",
			    gpa, size, r, errno);
	}
}

static inline void snpt_launch(struct kvm_vm *vm)
{
	struct kvm_sev_snp_launch_start start = {
		.policy = SNPT_POLICY_SMT | SNPT_POLICY_RSVD_MBO,
	};
	struct kvm_sev_snp_launch_finish finish = { 0 };
	struct userspace_mem_region *region;
	sparsebit_idx_t i, j;
	int ctr;

	vm_sev_ioctl(vm, KVM_SEV_SNP_LAUNCH_START, &start);

	/* Every page the library allocated as protected, i.e. all of slot 0's. */
	hash_for_each(vm->regions.slot_hash, ctr, region, slot_node) {
		if (!region->protected_phy_pages ||
		    !sparsebit_any_set(region->protected_phy_pages))
			continue;
		sparsebit_for_each_set_range(region->protected_phy_pages, i, j)
			snpt_launch_update_range(vm, i << vm->page_shift,
						 (j - i + 1) * vm->page_size);
	}

	vm_sev_ioctl(vm, KVM_SEV_SNP_LAUNCH_FINISH, &finish);
	vm->arch.is_pt_protected = true;
}
#else
/* Neither fits this library: snpt_require_snp() skips before these run. */
#define snpt_vm_create(...)	(snph_unreachable("snpt_vm_create", __VA_ARGS__), (struct kvm_vm *)NULL)
#define snpt_launch(...)	snph_unreachable("snpt_launch", __VA_ARGS__)
#endif

/*
 * Map the memslot @slot's [gpa, gpa + size) twice: identity mapped with
 * the C-bit clear (the shared view) and at @priv_gva with it set (the
 * private view).  The library sets the C-bit in a leaf PTE iff the gpa is
 * marked protected, so mark the range protected just for the second
 * mapping; unmarked again, it is not launched.  Call before snpt_launch().
 */
static inline void snpt_map_shared_and_private_views(struct kvm_vm *vm, uint32_t slot,
						     uint64_t gpa, uint64_t size,
						     uint64_t priv_gva)
{
	struct userspace_mem_region *region = memslot2region(vm, slot);
	const uint64_t npages = size / PAGE_SIZE;

	TEST_ASSERT(region->protected_phy_pages, "slot %u cannot hold protected pages", slot);
	virt_map(vm, gpa, gpa, npages);
	sparsebit_set_num(region->protected_phy_pages, gpa >> PAGE_SHIFT, npages);
	virt_map(vm, priv_gva, gpa, npages);
	sparsebit_clear_num(region->protected_phy_pages, gpa >> PAGE_SHIFT, npages);
}

#endif /* SNP_HARNESS_SNP_UTIL_H */
