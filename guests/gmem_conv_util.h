/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Host-side checks shared by gmem_misaligned_conversions_test and its SNP
 * counterpart. Include it after defining DATA_GPA (the memslot's base gpa) and
 * a `struct ctx` with at least these members:
 *   struct kvm_vm *vm;  int gmem_fd;  uint64_t gmem_offset;  bool failed;
 *   uint8_t *data_hva;	(the host's shared view of DATA_GPA)
 * fail() reports only the first failure of a subtest, as a KTAP diagnostic.
 */
#ifndef SNP_HARNESS_GMEM_CONV_UTIL_H
#define SNP_HARNESS_GMEM_CONV_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <linux/falloc.h>

#include "kvm_util.h"

static inline __printf(2, 3) void fail(struct ctx *c, const char *fmt, ...)
{
	va_list ap;

	if (!c->failed) {	/* report the first failure of a subtest only */
		va_start(ap, fmt);
		printf("# ");
		vprintf(fmt, ap);
		printf("\n");
		va_end(ap);
	}
	c->failed = true;
}

static inline int set_attrs(struct ctx *c, uint64_t gpa, uint64_t size, bool private)
{
	struct kvm_memory_attributes attr = {
		.attributes = private ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
		.address = gpa,
		.size = size,
	};
	int r = __vm_ioctl(c->vm, KVM_SET_MEMORY_ATTRIBUTES, &attr);

	if (r)
		fail(c, "KVM_SET_MEMORY_ATTRIBUTES(gpa 0x%lx, size 0x%lx, %s) failed: %s",
		     gpa, size, private ? "private" : "shared", strerror(errno));
	return r;
}

static inline void host_check_mem(struct ctx *c, uint64_t gpa, uint64_t size, uint8_t pattern)
{
	uint8_t *hva = c->data_hva + (gpa - DATA_GPA);
	uint64_t i;

	for (i = 0; i < size; i++) {
		if (hva[i] != pattern) {
			fail(c, "host mapping: gpa 0x%lx holds 0x%x, expected 0x%x",
			     gpa + i, hva[i], pattern);
			return;
		}
	}
}

static inline void host_punch(struct ctx *c, uint64_t gpa, uint64_t size)
{
	uint64_t off = c->gmem_offset + (gpa - DATA_GPA);

	if (fallocate(c->gmem_fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, off, size))
		fail(c, "fallocate(PUNCH_HOLE, gmem offset 0x%lx, 0x%lx) failed: %s",
		     off, size, strerror(errno));
}

#endif /* SNP_HARNESS_GMEM_CONV_UTIL_H */
