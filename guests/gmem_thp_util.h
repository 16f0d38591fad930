/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Host-side THP helpers shared by gmem_thp_split_collapse_test and its SNP
 * counterpart: thp_* vmstat counters, AnonHugePages from smaps, forced splits
 * through debugfs and MADV_COLLAPSE. Everything is static inline so each test
 * builds on its own.
 */
#ifndef SNP_HARNESS_GMEM_THP_UTIL_H
#define SNP_HARNESS_GMEM_THP_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kselftest.h"
#include "test_util.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define SPLIT_DEBUGFS		"/sys/kernel/debug/split_huge_pages"
#define THP_ENABLED		"/sys/kernel/mm/transparent_hugepage/enabled"

static const char * const vmstat_names[] = {
	"thp_fault_alloc",
	"thp_fault_fallback",
	"thp_split_pmd",
	"thp_split_page",
	"thp_split_page_failed",
	"thp_collapse_alloc",
	"thp_collapse_alloc_failed",
};
#define NR_VMSTAT	ARRAY_SIZE(vmstat_names)
#define VMSTAT_SPLIT_PAGE	3
#define VMSTAT_COLLAPSE_ALLOC	5

struct vmstat {
	long val[NR_VMSTAT];	/* -1: not in /proc/vmstat */
};

static inline void vmstat_read(struct vmstat *s)
{
	char name[64];
	long val;
	size_t i;
	FILE *f;

	for (i = 0; i < NR_VMSTAT; i++)
		s->val[i] = -1;
	f = fopen("/proc/vmstat", "r");
	TEST_ASSERT(f, "fopen(/proc/vmstat): %s", strerror(errno));
	while (fscanf(f, "%63s %ld", name, &val) == 2) {
		for (i = 0; i < NR_VMSTAT; i++)
			if (!strcmp(name, vmstat_names[i]))
				s->val[i] = val;
	}
	fclose(f);
}

/* Delta of counter i, or -1 if the counter does not exist. */
static inline long vmstat_delta(const struct vmstat *a, const struct vmstat *b, size_t i)
{
	if (a->val[i] < 0 || b->val[i] < 0)
		return -1;
	return b->val[i] - a->val[i];
}

static inline void vmstat_print(const struct vmstat *a, const struct vmstat *b)
{
	size_t i;

	for (i = 0; i < NR_VMSTAT; i++) {
		long d = vmstat_delta(a, b, i);

		if (d < 0)
			ksft_print_msg("vmstat %s: n/a\n", vmstat_names[i]);
		else
			ksft_print_msg("vmstat %s: +%ld\n", vmstat_names[i], d);
	}
}

/* Sum of AnonHugePages (kB) of the VMAs of this process overlapping [start, end). */
static inline long anon_huge_kb(uintptr_t start, uintptr_t end)
{
	unsigned long vs, ve, kb;
	bool in = false;
	char line[512];
	long total = 0;
	FILE *f;

	f = fopen("/proc/self/smaps", "r");
	TEST_ASSERT(f, "fopen(/proc/self/smaps): %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &vs, &ve) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = vs < end && ve > start;
		else if (in && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
			total += kb;
	}
	fclose(f);
	return total;
}

/* Write "<pid>,0x<start>,0x<end>" to split_huge_pages. 0 or an errno. */
static inline int thp_force_split(void *start, size_t size)
{
	char buf[128];
	ssize_t n;
	int fd, len, err = 0;

	len = snprintf(buf, sizeof(buf), "%d,0x%lx,0x%lx", getpid(),
		       (unsigned long)start, (unsigned long)start + size);
	fd = open(SPLIT_DEBUGFS, O_WRONLY);
	if (fd < 0)
		return errno;
	n = write(fd, buf, len);
	if (n < 0)
		err = errno;
	else if (n != len)
		err = EIO;
	close(fd);
	return err;
}

/* madvise(MADV_COLLAPSE), retrying EAGAIN. 0 or an errno. */
static inline int thp_force_collapse(void *start, size_t len)
{
	int i;

	for (i = 0; i < 5; i++) {
		if (!madvise(start, len, MADV_COLLAPSE))
			return 0;
		if (errno != EAGAIN)
			return errno;
		usleep(10000);
	}
	return EAGAIN;
}

static inline void require_split_debugfs(void)
{
	int fd;

	if (access(SPLIT_DEBUGFS, F_OK))
		ksft_exit_skip("%s: %s (debugfs not mounted or no THP split support)\n",
			       SPLIT_DEBUGFS, strerror(errno));
	fd = open(SPLIT_DEBUGFS, O_WRONLY);
	if (fd < 0)
		ksft_exit_skip("%s not writable: %s\n", SPLIT_DEBUGFS, strerror(errno));
	close(fd);
}

static inline bool thp_never(void)
{
	char buf[128] = "";
	FILE *f = fopen(THP_ENABLED, "r");

	if (!f)
		return true;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	return strstr(buf, "[never]") != NULL;
}

#endif /* SNP_HARNESS_GMEM_THP_UTIL_H */
