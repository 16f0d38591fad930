/* SPDX-License-Identifier: GPL-2.0 */
/*
 * snph_api.h - the tree's selftest library, as snp-harness read it.
 *
 * harness/kernel/selftest_api.py scans the tree's selftest headers and passes
 * what it found as -DSNPH_* macros (recorded in the selftests manifest):
 *   SNPH_<FUNCTION>_ARGS  parameter count of a library function or
 *                         function-like macro, -1 when not declared
 *                         (e.g. SNPH_VM_MEM_ADD_ARGS, SNPH_____VM_CREATE_ARGS)
 *   SNPH_HAVE_<FACT>      0/1: SEV_H, SNP_LIB (sev.h's SNP launch helpers),
 *                         <STRUCT>_<MEMBER> (e.g. VM_SHAPE_TYPE)
 *
 * Programs call the library through the snph_* wrappers below, which exist
 * whatever the tree has: where the library lacks a shape we call, the
 * wrapper is a stub that is never reached, because main() first calls
 * snph_require(), which exits with KSFT_SKIP and the reason.  So a tree
 * whose library changed builds every program, and the ones that cannot run
 * there say why.
 *
 * UAPI constants (GUEST_MEMFD_FLAG_MMAP, ...) are tested with #ifdef where
 * used: the installed headers are the tree's own.
 */
#ifndef SNP_HARNESS_SNPH_API_H
#define SNP_HARNESS_SNPH_API_H

#ifndef SNPH_API
#error "guests/ are built by snp-harness (harness/kernel/selftests_build.py), which passes the tree's selftest API as -DSNPH_* macros"
#endif

#include <stddef.h>

#include "kselftest.h"
#include "test_util.h"
#include "kvm_util.h"

#define SNPH_STR_(x)	#x
#define SNPH_STR(x)	SNPH_STR_(x)

/* NULL if fn has `want` parameters in this library, else why it cannot be called. */
#define SNPH_ARGS(fn, have, want)						\
	((have) == (want) ? NULL : (have) < 0 ? #fn "() is not declared" :	\
	 #fn "() takes " SNPH_STR(have) " parameters, not " #want)
#define SNPH_HAVE(fact, what)	((fact) ? NULL : what)

/* Exits with KSFT_SKIP naming the first non-NULL reason. */
static inline void snph_require(const char *const *missing, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (missing[i])
			ksft_exit_skip("this tree's selftest library: %s\n", missing[i]);
}

#define SNPH_REQUIRE(...)							\
	do {									\
		const char *const __missing[] = { __VA_ARGS__ };		\
		snph_require(__missing, ARRAY_SIZE(__missing));			\
	} while (0)

/* A stub's body; it takes the call's arguments so that they count as used. */
static inline void __attribute__((noreturn)) snph_unreachable(const char *fn, ...)
{
	TEST_FAIL("%s() called although this tree's selftest library lacks it (snph_require missing?)", fn);
	__builtin_unreachable();
}

/* What the guest_memfd programs call, and the wrappers they call it through. */
#define SNPH_GMEM_MISSING							\
	SNPH_HAVE(SNPH_HAVE_VM_SHAPE_TYPE, "no struct vm_shape with a VM type"), \
	SNPH_ARGS(vm_create_shape_with_one_vcpu, SNPH_VM_CREATE_SHAPE_WITH_ONE_VCPU_ARGS, 3), \
	SNPH_ARGS(vm_create_barebones_type, SNPH_VM_CREATE_BAREBONES_TYPE_ARGS, 1), \
	SNPH_ARGS(vm_create_guest_memfd, SNPH_VM_CREATE_GUEST_MEMFD_ARGS, 3),	\
	SNPH_ARGS(vm_mem_add, SNPH_VM_MEM_ADD_ARGS, 8)

#if SNPH_HAVE_VM_SHAPE_TYPE && SNPH_VM_CREATE_SHAPE_WITH_ONE_VCPU_ARGS == 3
static inline struct kvm_vm *snph_vm_create_type_with_one_vcpu(unsigned long type,
							       struct kvm_vcpu **vcpu,
							       void *guest_code)
{
	const struct vm_shape shape = {
		.mode = VM_MODE_DEFAULT,
		.type = type,
	};

	return vm_create_shape_with_one_vcpu(shape, vcpu, guest_code);
}
#else
#define snph_vm_create_type_with_one_vcpu(...)	\
	(snph_unreachable("vm_create_shape_with_one_vcpu", __VA_ARGS__), (struct kvm_vm *)NULL)
#endif

#if SNPH_VM_CREATE_BAREBONES_TYPE_ARGS == 1
#define snph_vm_create_barebones_type vm_create_barebones_type
#else
#define snph_vm_create_barebones_type(...)	\
	(snph_unreachable("vm_create_barebones_type", __VA_ARGS__), (struct kvm_vm *)NULL)
#endif

#if SNPH_VM_CREATE_GUEST_MEMFD_ARGS == 3
#define snph_vm_create_guest_memfd vm_create_guest_memfd
#else
#define snph_vm_create_guest_memfd(...)	(snph_unreachable("vm_create_guest_memfd", __VA_ARGS__), -1)
#endif

#if SNPH_VM_MEM_ADD_ARGS == 8
#define snph_vm_mem_add vm_mem_add
#else
#define snph_vm_mem_add(...)	snph_unreachable("vm_mem_add", __VA_ARGS__)
#endif

#if SNPH___VM_SET_USER_MEMORY_REGION2_ARGS == 8
#define __snph_vm_set_user_memory_region2 __vm_set_user_memory_region2
#else
#define __snph_vm_set_user_memory_region2(...)	\
	(snph_unreachable("__vm_set_user_memory_region2", __VA_ARGS__), -1)
#endif

#if SNPH_VM_SET_USER_MEMORY_REGION2_ARGS == 8
#define snph_vm_set_user_memory_region2 vm_set_user_memory_region2
#else
#define snph_vm_set_user_memory_region2(...)	snph_unreachable("vm_set_user_memory_region2", __VA_ARGS__)
#endif

#if SNPH_VM_GUEST_MEM_FALLOCATE_ARGS == 4
#define snph_vm_guest_mem_fallocate vm_guest_mem_fallocate
#else
#define snph_vm_guest_mem_fallocate(...)	snph_unreachable("vm_guest_mem_fallocate", __VA_ARGS__)
#endif

#if SNPH_VM_SET_MEMORY_ATTRIBUTES_ARGS == 4
#define snph_vm_set_memory_attributes vm_set_memory_attributes
#else
#define snph_vm_set_memory_attributes(...)	snph_unreachable("vm_set_memory_attributes", __VA_ARGS__)
#endif

#endif /* SNP_HARNESS_SNPH_API_H */
