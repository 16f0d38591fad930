// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_caps_probe: report what the running kernel's KVM offers for private
 * memory (VM types, guest_memfd, memory attributes), as KTAP.
 *
 * Part of snp-harness; built inside tools/testing/selftests/kvm of the kernel
 * tree under test, against that tree's UAPI headers and selftests library.
 *
 * The probe never aborts on a kernel that lacks a feature: it reports it.
 * Every ioctl that may fail is issued raw, never through a library helper
 * that would TEST_ASSERT.
 *
 * Output format (stable; harness/scenarios parse it)
 * --------------------------------------------------
 * The library's constructor prints "Random seed: 0x..." before the KTAP
 * header, as in every KVM selftest. Then:
 *
 *   TAP version 13
 *   1..8
 *   ok 1 vm_types
 *   ok 2 guest_memfd
 *   ok 3 memory_attributes
 *   ok 4 gmem_flags
 *   ok 5 create_sw_protected_vm
 *   ok 6 create_snp_vm # SKIP <reason>
 *   ok 7 gmem_huge_folios # SKIP <reason>
 *   ok 8 gmem_mmap # SKIP <reason>
 *
 * Test names and their order are fixed. Verdicts:
 *   ok         the feature is present and works;
 *   ok # SKIP  the kernel does not offer the feature (not a failure);
 *   not ok     the kernel advertises the feature, but using it failed.
 * The exit code follows ksft_finished(): 0 unless a test is "not ok" (then 1);
 * 4 (KSFT_SKIP, "1..0 # SKIP <reason>") when /dev/kvm cannot be opened.
 *
 * Facts are diagnostic lines "# <key>: <value>", key matching
 * [a-z][a-z0-9_]*. Each key is printed at most once; its position in the
 * output is not part of the format. Other "#" lines (e.g. "# Totals: ...")
 * never match that key pattern. Values:
 *
 *   mask     "0x<hex>" optionally followed by space-separated lowercase bit
 *            names, e.g. "0x3 default sw_protected"; unnamed bits are
 *            "bit<N>". Only the hex token is guaranteed.
 *   result   "ok", or "<ERRNO>(<n>)" such as "EINVAL(22)"; errno values
 *            without a known name are "errno(<n>)".
 *   int      a decimal integer (a KVM_CHECK_EXTENSION answer).
 *   use      "ok": a guest_memfd was created, mmap()ed MAP_SHARED, and the
 *            host faulted its pages in (MADV_POPULATE_WRITE) and wrote and
 *            read them; else "<step> <result>" for the first step that
 *            failed, step one of create, mmap, fault, e.g. "fault EFAULT(14)"
 *            (KVM keeps the pages private: the host may not fault them in),
 *            or "data mismatch"; "undefined" when the UAPI headers the probe
 *            was built against lack the flag.
 *
 *   kernel_release          string, uname -r
 *   kvm_api_version         int, KVM_GET_API_VERSION
 *   vm_types                mask, KVM_CAP_VM_TYPES on /dev/kvm; 0x0 means the
 *                           kernel predates the capability (only the default
 *                           VM type may be assumed)
 *   create_vm_<t>           result of KVM_CREATE_VM(type <t>), for every <t>
 *                           in default, sw_protected, sev, sev_es, snp
 *   guest_memfd             int, KVM_CAP_GUEST_MEMFD on /dev/kvm
 *   user_memory2            int, KVM_CAP_USER_MEMORY2 on /dev/kvm
 *   guest_memfd_<t>         int, KVM_CAP_GUEST_MEMFD on a VM of type <t>
 *                           (only for VM types that could be created)
 *   gmem_create_2m_<t>      result of KVM_CREATE_GUEST_MEMFD(size 2 MiB,
 *                           flags 0) on a VM of type <t> (same condition)
 *   gmem_vm_type            <t> the summary keys below were measured on: the
 *                           first of snp, sw_protected, default whose VM
 *                           created a 2 MiB guest_memfd; "none" if none did
 *   gmem_create_2m          result on gmem_vm_type (or of the last attempt)
 *   memory_attributes       mask, KVM_CAP_MEMORY_ATTRIBUTES on /dev/kvm
 *                           (bit 3 = private)
 *   memory_attributes_<t>   mask, the same on a VM of type <t>
 *   gmem_flags              mask of the KVM_CREATE_GUEST_MEMFD flag bits
 *                           (0..63, each tried alone, size 2 MiB) accepted on
 *                           gmem_vm_type; absent if gmem_vm_type is none
 *   gmem_flags_<t>          mask, the same on a VM of type <t>
 *   gmem_flags_errors       "none", or space-separated "bit<N>=<result>" for
 *                           bits refused with an errno other than EINVAL on
 *                           gmem_vm_type (a known flag that failed for
 *                           another reason, e.g. ENOMEM)
 *   gmem_huge_flags_<t>     "0x<hex>" or "none": the first creation flags
 *                           (0, then each accepted flag bit alone) under
 *                           which fallocating 4 MiB of a fresh guest_memfd
 *                           put at least 2 MiB into huge pages, as
 *                           /proc/meminfo counts them (FileHugePages for
 *                           THP folios in the page cache, HugePages_Free
 *                           for hugetlb); for every <t> that created one
 *   gmem_huge_flags         the same on gmem_vm_type
 *   gmem_huge_kb            kB that fallocate put into huge pages under
 *                           gmem_huge_flags (the most seen if "none")
 *   guest_memfd_flags       mask, KVM_CAP_GUEST_MEMFD_FLAGS on /dev/kvm
 *   guest_memfd_flags_<t>   mask, KVM_CAP_GUEST_MEMFD_FLAGS on a VM of type
 *                           <t> (both absent if the headers lack the cap)
 *   gmem_mmap_<t>           use, flags GUEST_MEMFD_FLAG_MMAP
 *   gmem_init_shared_<t>    use, flags GUEST_MEMFD_FLAG_MMAP | INIT_SHARED
 *                           (the _<t> keys of gmem_flags and of these, for
 *                           every <t> that created a 2 MiB guest_memfd)
 *
 * gmem_mmap is about KVM_X86_SW_PROTECTED_VM, the type our guest_memfd
 * tests use: "ok" once such a guest_memfd could be created and mmap()ed
 * (faulting in may be refused: its pages start private); "not ok" when
 * KVM_CAP_GUEST_MEMFD_FLAGS advertises MMAP (or INIT_SHARED) for it and the
 * corresponding use failed; SKIP otherwise.
 *
 * Mainline (6.12) guest_memfd allocates only order-0 folios; series that
 * add huge folios name their flag differently (or need none), which is why
 * huge folios are measured rather than looked up.  A concurrent THP user on
 * the host could inflate the measurement; the harness runs it on an idle
 * target.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>

#include <linux/falloc.h>
#include <linux/kvm.h>

#include "kvm_util.h"
#include "test_util.h"

#define GMEM_PROBE_SIZE		(2UL << 20)
#define NR_VM_TYPES		5
#define NR_TESTS		8
#define HUGE_PROBE_SIZE		(4UL << 20)

static const char * const vm_type_names[NR_VM_TYPES] = {
	[KVM_X86_DEFAULT_VM]		= "default",
	[KVM_X86_SW_PROTECTED_VM]	= "sw_protected",
	[KVM_X86_SEV_VM]		= "sev",
	[KVM_X86_SEV_ES_VM]		= "sev_es",
	[KVM_X86_SNP_VM]		= "snp",
};

/* guest_memfd is summarised on the first of these that can create one. */
static const int gmem_vm_preference[] = {
	KVM_X86_SNP_VM, KVM_X86_SW_PROTECTED_VM, KVM_X86_DEFAULT_VM,
};

/* How far using an mmap()ed guest_memfd got: the first step that failed. */
enum { USE_UNDEFINED, USE_CREATE, USE_MMAP, USE_FAULT, USE_DATA, USE_OK };
static const char * const use_steps[] = {
	[USE_CREATE] = "create", [USE_MMAP] = "mmap", [USE_FAULT] = "fault",
};

struct gmem_use {
	int step;
	int err;
};

struct vm_facts {
	int create_errno;		/* 0: KVM_CREATE_VM succeeded */
	int gmem_cap;			/* KVM_CAP_GUEST_MEMFD on the VM */
	uint64_t mem_attrs;		/* KVM_CAP_MEMORY_ATTRIBUTES on the VM */
	int gmem_errno;			/* 2 MiB guest_memfd, flags 0 */
	uint64_t gmem_flags;		/* flag bits accepted alone */
	int flag_errno[64];		/* per bit: 0 accepted, else errno */
	int64_t huge_flags;		/* -1: no flags gave huge folios */
	long huge_kb;			/* kB put into huge pages (max seen) */
	int flags_cap;			/* KVM_CAP_GUEST_MEMFD_FLAGS on the VM */
	struct gmem_use use_mmap, use_init_shared;	/* see use_gmem_mmap() */
};

static struct vm_facts vms[NR_VM_TYPES];

static const char *errno_name(int e)
{
	switch (e) {
	case EPERM:	return "EPERM";
	case ENOENT:	return "ENOENT";
	case EIO:	return "EIO";
	case ENXIO:	return "ENXIO";
	case E2BIG:	return "E2BIG";
	case EBADF:	return "EBADF";
	case EAGAIN:	return "EAGAIN";
	case ENOMEM:	return "ENOMEM";
	case EACCES:	return "EACCES";
	case EFAULT:	return "EFAULT";
	case EBUSY:	return "EBUSY";
	case EEXIST:	return "EEXIST";
	case ENODEV:	return "ENODEV";
	case EINVAL:	return "EINVAL";
	case ENFILE:	return "ENFILE";
	case EMFILE:	return "EMFILE";
	case ENOTTY:	return "ENOTTY";
	case EFBIG:	return "EFBIG";
	case ENOSPC:	return "ENOSPC";
	case ERANGE:	return "ERANGE";
	case ENOSYS:	return "ENOSYS";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	default:	return NULL;
	}
}

/* "ok" or "EINVAL(22)"; returns a static buffer (one of two, rotating). */
static const char *result_str(int e)
{
	static char bufs[2][32];
	static int next;
	char *buf = bufs[next++ & 1];
	const char *name = errno_name(e);

	if (!e)
		return "ok";
	snprintf(buf, sizeof(bufs[0]), "%s(%d)", name ? name : "errno", e);
	return buf;
}

static void print_mask(const char *key, uint64_t mask,
		       const char * const *names, int nr_names)
{
	int bit;

	printf("# %s: 0x%" PRIx64, key, mask);
	for (bit = 0; bit < 64; bit++) {
		if (!(mask & (1ULL << bit)))
			continue;
		if (bit < nr_names && names[bit])
			printf(" %s", names[bit]);
		else
			printf(" bit%d", bit);
	}
	printf("\n");
}

static const char * const mem_attr_names[] = {
	[3] = "private",	/* KVM_MEMORY_ATTRIBUTE_PRIVATE */
};

static const char * const gmem_flag_names[] = {
#ifdef GUEST_MEMFD_FLAG_MMAP
	[0] = "mmap",
#endif
#ifdef GUEST_MEMFD_FLAG_INIT_SHARED
	[1] = "init_shared",
#endif
	[63] = NULL,		/* sized for all 64 flag bits */
};

/* KVM_CHECK_EXTENSION on a /dev/kvm or VM fd; never negative. */
static int check_cap(int fd, long cap)
{
	int ret = __kvm_ioctl(fd, KVM_CHECK_EXTENSION, (void *)cap);

	return ret < 0 ? 0 : ret;
}

/* Returns a guest_memfd fd, or -errno. */
static int create_gmem(int vm_fd, uint64_t size, uint64_t flags)
{
	struct kvm_create_guest_memfd args = {
		.size = size,
		.flags = flags,
	};
	int fd = __kvm_ioctl(vm_fd, KVM_CREATE_GUEST_MEMFD, &args);

	return fd < 0 ? -errno : fd;
}

/* A /proc/meminfo field in kB (hugetlb counts are in pages), or -1. */
static long meminfo(const char *field)
{
	size_t len = strlen(field);
	char line[128];
	long value = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, field, len) && line[len] == ':') {
			value = strtol(line + len + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return value;
}

/* kB of memory in huge pages: file THPs plus hugetlb pages in use. */
static long huge_backed_kb(void)
{
	long thp = meminfo("FileHugePages"), total = meminfo("HugePages_Total");
	long free = meminfo("HugePages_Free"), size = meminfo("Hugepagesize");
	long kb = thp > 0 ? thp : 0;

	if (total > 0 && free >= 0 && size > 0)
		kb += (total - free) * size;
	return kb;
}

/* kB that fallocating a fresh guest_memfd put into huge pages, or -errno. */
static long gmem_huge_kb(int vm_fd, uint64_t flags)
{
	int fd = create_gmem(vm_fd, HUGE_PROBE_SIZE, flags);
	long before, after;

	if (fd < 0)
		return fd;
	before = huge_backed_kb();
	if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, HUGE_PROBE_SIZE)) {
		int e = errno;

		close(fd);
		return -e;
	}
	after = huge_backed_kb();
	close(fd);
	return after > before ? after - before : 0;
}

#ifdef GUEST_MEMFD_FLAG_MMAP
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE	23
#endif

/*
 * Create a guest_memfd with @flags, mmap() it shared and use it from the
 * host.  MADV_POPULATE_WRITE reports a page the host may not fault in
 * (KVM's SIGBUS for private guest_memfd pages) as EFAULT, so no signal
 * handling is needed.
 */
static struct gmem_use use_gmem_mmap(int vm_fd, uint64_t flags)
{
	struct gmem_use u = { USE_CREATE, 0 };
	size_t size = 2 * getpagesize();
	volatile uint8_t *mem;
	int fd = create_gmem(vm_fd, size, flags);

	if (fd < 0) {
		u.err = -fd;
		return u;
	}
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED) {
		u.step = USE_MMAP;
		u.err = errno;
		close(fd);
		return u;
	}
	if (madvise((void *)mem, size, MADV_POPULATE_WRITE)) {
		u.step = USE_FAULT;
		u.err = errno;
	} else {
		mem[0] = 0xa5;
		mem[size - 1] = 0x5a;
		u.step = mem[0] == 0xa5 && mem[size - 1] == 0x5a ? USE_OK : USE_DATA;
	}
	munmap((void *)mem, size);
	close(fd);
	return u;
}
#endif

static void print_use(const char *key, const char *type, struct gmem_use u)
{
	printf("# %s_%s: ", key, type);
	if (u.step == USE_OK)
		printf("ok\n");
	else if (u.step == USE_UNDEFINED)
		printf("undefined\n");
	else if (u.step == USE_DATA)
		printf("data mismatch\n");
	else
		printf("%s %s\n", use_steps[u.step], result_str(u.err));
}

static void probe_huge_folios(int vm_fd, struct vm_facts *f)
{
	long kb = gmem_huge_kb(vm_fd, 0);
	int bit;

	f->huge_flags = -1;
	for (bit = -1; bit < 64; bit++) {
		uint64_t flags = bit < 0 ? 0 : 1ULL << bit;

		if (bit >= 0) {
			if (!(f->gmem_flags & flags))
				continue;
			kb = gmem_huge_kb(vm_fd, flags);
		}
		if (kb > f->huge_kb)
			f->huge_kb = kb;
		if (kb >= 2048) {
			f->huge_flags = flags;
			return;
		}
	}
}

static void probe_vm_type(int kvm_fd, int type)
{
	struct vm_facts *f = &vms[type];
	int vm_fd, fd, bit;

	vm_fd = __kvm_ioctl(kvm_fd, KVM_CREATE_VM, (void *)(unsigned long)type);
	if (vm_fd < 0) {
		f->create_errno = errno;
		return;
	}

	f->gmem_cap = check_cap(vm_fd, KVM_CAP_GUEST_MEMFD);
	f->mem_attrs = (unsigned int)check_cap(vm_fd, KVM_CAP_MEMORY_ATTRIBUTES);

	fd = create_gmem(vm_fd, GMEM_PROBE_SIZE, 0);
	if (fd < 0) {
		f->gmem_errno = -fd;
		close(vm_fd);
		return;
	}
	close(fd);

	for (bit = 0; bit < 64; bit++) {
		fd = create_gmem(vm_fd, GMEM_PROBE_SIZE, 1ULL << bit);
		if (fd >= 0) {
			f->gmem_flags |= 1ULL << bit;
			close(fd);
		} else {
			f->flag_errno[bit] = -fd;
		}
	}
	probe_huge_folios(vm_fd, f);
#ifdef KVM_CAP_GUEST_MEMFD_FLAGS
	f->flags_cap = check_cap(vm_fd, KVM_CAP_GUEST_MEMFD_FLAGS);
#endif
#ifdef GUEST_MEMFD_FLAG_MMAP
	f->use_mmap = use_gmem_mmap(vm_fd, GUEST_MEMFD_FLAG_MMAP);
#endif
#ifdef GUEST_MEMFD_FLAG_INIT_SHARED
	f->use_init_shared = use_gmem_mmap(vm_fd, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
#endif
	close(vm_fd);
}

static bool type_advertised(uint64_t vm_types, int type)
{
	return vm_types & (1ULL << type);
}

static void report(int code, const char *name, const char *reason)
{
	ksft_test_result_code(code, name, reason ? "%s" : NULL, reason);
}

static void report_vm_types(uint64_t vm_types)
{
	int t;

	print_mask("vm_types", vm_types, vm_type_names, NR_VM_TYPES);
	for (t = 0; t < NR_VM_TYPES; t++) {
		char key[32];

		snprintf(key, sizeof(key), "create_vm_%s", vm_type_names[t]);
		printf("# %s: %s\n", key, result_str(vms[t].create_errno));
	}
	if (vm_types)
		report(KSFT_PASS, "vm_types", NULL);
	else
		report(KSFT_SKIP, "vm_types", "KVM_CAP_VM_TYPES not supported");
}

/* Returns the VM type the guest_memfd summary is about, or -1. */
static int report_guest_memfd(int kvm_fd)
{
	int cap = check_cap(kvm_fd, KVM_CAP_GUEST_MEMFD);
	int gmem_type = -1, last_errno = 0;
	char reason[128];
	unsigned int i;
	int t;

	printf("# guest_memfd: %d\n", cap);
	printf("# user_memory2: %d\n", check_cap(kvm_fd, KVM_CAP_USER_MEMORY2));
	for (t = 0; t < NR_VM_TYPES; t++) {
		if (vms[t].create_errno)
			continue;
		printf("# guest_memfd_%s: %d\n", vm_type_names[t], vms[t].gmem_cap);
		printf("# gmem_create_2m_%s: %s\n", vm_type_names[t],
		       result_str(vms[t].gmem_errno));
	}
	for (i = 0; i < ARRAY_SIZE(gmem_vm_preference); i++) {
		t = gmem_vm_preference[i];
		if (vms[t].create_errno)
			continue;
		if (!vms[t].gmem_errno) {
			gmem_type = t;
			break;
		}
		last_errno = vms[t].gmem_errno;
	}
	printf("# gmem_vm_type: %s\n", gmem_type >= 0 ? vm_type_names[gmem_type] : "none");
	printf("# gmem_create_2m: %s\n", result_str(gmem_type >= 0 ? 0 : last_errno));

	if (gmem_type >= 0) {
		report(KSFT_PASS, "guest_memfd", NULL);
	} else if (!cap) {
		report(KSFT_SKIP, "guest_memfd", "KVM_CAP_GUEST_MEMFD not supported");
	} else {
		snprintf(reason, sizeof(reason),
			 "KVM_CAP_GUEST_MEMFD is %d but no VM created a 2 MiB guest_memfd: %s",
			 cap, result_str(last_errno));
		report(KSFT_FAIL, "guest_memfd", reason);
	}
	return gmem_type;
}

static void report_memory_attributes(int kvm_fd)
{
	uint64_t attrs = (unsigned int)check_cap(kvm_fd, KVM_CAP_MEMORY_ATTRIBUTES);
	int t;

	print_mask("memory_attributes", attrs, mem_attr_names,
		   ARRAY_SIZE(mem_attr_names));
	for (t = 0; t < NR_VM_TYPES; t++) {
		char key[48];

		if (vms[t].create_errno)
			continue;
		snprintf(key, sizeof(key), "memory_attributes_%s", vm_type_names[t]);
		print_mask(key, vms[t].mem_attrs, mem_attr_names,
			   ARRAY_SIZE(mem_attr_names));
	}
	if (attrs)
		report(KSFT_PASS, "memory_attributes", NULL);
	else
		report(KSFT_SKIP, "memory_attributes",
		       "KVM_CAP_MEMORY_ATTRIBUTES not supported");
}

static void report_gmem_flags(int gmem_type)
{
	bool any_error = false;
	int t, bit;

	for (t = 0; t < NR_VM_TYPES; t++) {
		char key[32];

		if (vms[t].create_errno || vms[t].gmem_errno)
			continue;
		snprintf(key, sizeof(key), "gmem_flags_%s", vm_type_names[t]);
		print_mask(key, vms[t].gmem_flags, gmem_flag_names,
			   ARRAY_SIZE(gmem_flag_names));
	}
	if (gmem_type < 0) {
		report(KSFT_SKIP, "gmem_flags", "no VM type can create a guest_memfd");
		return;
	}

	print_mask("gmem_flags", vms[gmem_type].gmem_flags, gmem_flag_names,
		   ARRAY_SIZE(gmem_flag_names));
	printf("# gmem_flags_errors:");
	for (bit = 0; bit < 64; bit++) {
		int e = vms[gmem_type].flag_errno[bit];

		if (!e || e == EINVAL)
			continue;
		printf(" bit%d=%s", bit, result_str(e));
		any_error = true;
	}
	printf("%s\n", any_error ? "" : " none");
	report(KSFT_PASS, "gmem_flags", NULL);
}

static void report_huge_folios(int gmem_type)
{
	char reason[160];
	int t;

	for (t = 0; t < NR_VM_TYPES; t++) {
		if (vms[t].create_errno || vms[t].gmem_errno)
			continue;
		if (vms[t].huge_flags < 0)
			printf("# gmem_huge_flags_%s: none\n", vm_type_names[t]);
		else
			printf("# gmem_huge_flags_%s: 0x%lx\n", vm_type_names[t],
			       (unsigned long)vms[t].huge_flags);
	}
	if (gmem_type < 0) {
		report(KSFT_SKIP, "gmem_huge_folios", "no VM type can create a guest_memfd");
		return;
	}
	t = gmem_type;
	if (vms[t].huge_flags < 0)
		printf("# gmem_huge_flags: none\n");
	else
		printf("# gmem_huge_flags: 0x%lx\n", (unsigned long)vms[t].huge_flags);
	printf("# gmem_huge_kb: %ld\n", vms[t].huge_kb);
	if (vms[t].huge_flags >= 0) {
		report(KSFT_PASS, "gmem_huge_folios", NULL);
		return;
	}
	snprintf(reason, sizeof(reason),
		 "guest_memfd allocated only small folios (fallocate of 4 MiB: %ld kB huge, with flags 0 and each accepted flag)",
		 vms[t].huge_kb);
	report(KSFT_SKIP, "gmem_huge_folios", reason);
}

/* The UAPI's flag bits, or 0 where the headers predate them. */
#ifdef GUEST_MEMFD_FLAG_MMAP
#define PROBE_FLAG_MMAP		GUEST_MEMFD_FLAG_MMAP
#else
#define PROBE_FLAG_MMAP		0
#endif
#ifdef GUEST_MEMFD_FLAG_INIT_SHARED
#define PROBE_FLAG_INIT_SHARED	GUEST_MEMFD_FLAG_INIT_SHARED
#else
#define PROBE_FLAG_INIT_SHARED	0
#endif

static void report_gmem_mmap(int kvm_fd)
{
	const struct vm_facts *f = &vms[KVM_X86_SW_PROTECTED_VM];
	bool advertised = f->flags_cap & PROBE_FLAG_MMAP;
	char reason[192];
	int t;

#ifdef KVM_CAP_GUEST_MEMFD_FLAGS
	print_mask("guest_memfd_flags", (unsigned int)check_cap(kvm_fd, KVM_CAP_GUEST_MEMFD_FLAGS),
		   gmem_flag_names, ARRAY_SIZE(gmem_flag_names));
#endif
	for (t = 0; t < NR_VM_TYPES; t++) {
		if (vms[t].create_errno || vms[t].gmem_errno)
			continue;
#ifdef KVM_CAP_GUEST_MEMFD_FLAGS
		{
			char key[48];

			snprintf(key, sizeof(key), "guest_memfd_flags_%s", vm_type_names[t]);
			print_mask(key, (unsigned int)vms[t].flags_cap, gmem_flag_names,
				   ARRAY_SIZE(gmem_flag_names));
		}
#endif
		print_use("gmem_mmap", vm_type_names[t], vms[t].use_mmap);
		print_use("gmem_init_shared", vm_type_names[t], vms[t].use_init_shared);
	}
	(void)kvm_fd;

	if (f->create_errno || f->gmem_errno) {
		report(KSFT_SKIP, "gmem_mmap", "no KVM_X86_SW_PROTECTED_VM guest_memfd");
	} else if (f->use_mmap.step == USE_UNDEFINED) {
		report(KSFT_SKIP, "gmem_mmap", "built against UAPI headers without GUEST_MEMFD_FLAG_MMAP");
	} else if (f->use_mmap.step <= USE_MMAP) {
		snprintf(reason, sizeof(reason), "GUEST_MEMFD_FLAG_MMAP guest_memfd of a sw_protected VM: %s %s%s",
			 use_steps[f->use_mmap.step], result_str(f->use_mmap.err),
			 advertised ? ", although KVM_CAP_GUEST_MEMFD_FLAGS advertises it" : "");
		report(advertised ? KSFT_FAIL : KSFT_SKIP, "gmem_mmap", reason);
	} else if ((f->flags_cap & PROBE_FLAG_INIT_SHARED) && f->use_init_shared.step != USE_OK) {
		report(KSFT_FAIL, "gmem_mmap",
		       "KVM_CAP_GUEST_MEMFD_FLAGS advertises INIT_SHARED for sw_protected, but using it failed");
	} else {
		report(KSFT_PASS, "gmem_mmap", NULL);
	}
}

static void report_create_vm(uint64_t vm_types, int type, const char *name)
{
	int e = vms[type].create_errno;
	char reason[128];

	if (!e) {
		report(KSFT_PASS, name, NULL);
	} else if (!type_advertised(vm_types, type)) {
		snprintf(reason, sizeof(reason),
			 "VM type %s not in KVM_CAP_VM_TYPES; KVM_CREATE_VM: %s",
			 vm_type_names[type], result_str(e));
		report(KSFT_SKIP, name, reason);
	} else {
		snprintf(reason, sizeof(reason),
			 "VM type %s advertised but KVM_CREATE_VM failed: %s",
			 vm_type_names[type], result_str(e));
		report(KSFT_FAIL, name, reason);
	}
}

int main(void)
{
	struct utsname uts;
	uint64_t vm_types;
	int kvm_fd, gmem_type, t;

	ksft_print_header();

	kvm_fd = open(KVM_DEV_PATH, O_RDWR);
	if (kvm_fd < 0)
		ksft_exit_skip("cannot open %s: %s\n", KVM_DEV_PATH, result_str(errno));

	ksft_set_plan(NR_TESTS);

	if (!uname(&uts))
		printf("# kernel_release: %s\n", uts.release);
	printf("# kvm_api_version: %d\n", __kvm_ioctl(kvm_fd, KVM_GET_API_VERSION, NULL));

	vm_types = (unsigned int)check_cap(kvm_fd, KVM_CAP_VM_TYPES);
	for (t = 0; t < NR_VM_TYPES; t++)
		probe_vm_type(kvm_fd, t);

	report_vm_types(vm_types);
	gmem_type = report_guest_memfd(kvm_fd);
	report_memory_attributes(kvm_fd);
	report_gmem_flags(gmem_type);
	report_create_vm(vm_types, KVM_X86_SW_PROTECTED_VM, "create_sw_protected_vm");
	report_create_vm(vm_types, KVM_X86_SNP_VM, "create_snp_vm");
	report_huge_folios(gmem_type);
	report_gmem_mmap(kvm_fd);

	close(kvm_fd);
	ksft_finished();
}
