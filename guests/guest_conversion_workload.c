// SPDX-License-Identifier: GPL-2.0
/*
 * guest_conversion_workload - runs inside a guest: loads gmem_conv_workload.ko
 * (guests/kmod/), which converts memory private<->shared through the guest
 * kernel, and prints its KTAP results.
 *
 * Part of snp-harness; built with the KVM selftests (it uses none of their
 * library, only kselftest.h for the exit codes). Like every guests/guest_*
 * program it is compiled on its own, without the KVM library, whose
 * constructor needs /dev/kvm in newer trees, which a guest does not have.
 *
 *   guest_conversion_workload MODULE.ko [rounds=N] [max_ms=N]
 *
 * Exit: 0 all cases passed, 1 a case failed, 4 (KSFT_SKIP) the guest kernel
 * cannot load modules (the reason is printed as "1..0 # SKIP ...").
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "kselftest.h"

#define RESULTS "/sys/module/gmem_conv_workload/parameters/ktap"

int main(int argc, char *argv[])
{
	char params[256] = "", buf[4096];
	ssize_t n;
	int fd, i;

	if (argc < 2) {
		fprintf(stderr, "usage: %s MODULE.ko [rounds=N] [max_ms=N]\n", argv[0]);
		return KSFT_FAIL;
	}
	for (i = 2; i < argc; i++) {
		if (strlen(params) + strlen(argv[i]) + 2 > sizeof(params)) {
			fprintf(stderr, "module parameters too long\n");
			return KSFT_FAIL;
		}
		strcat(params, argv[i]);
		strcat(params, " ");
	}
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		printf("1..0 # SKIP cannot open %s: %s\n", argv[1], strerror(errno));
		return KSFT_SKIP;
	}
	if (syscall(SYS_finit_module, fd, params, 0)) {
		int e = errno;

		close(fd);
		if (e == ENOSYS) {
			printf("1..0 # SKIP the guest kernel cannot load modules (CONFIG_MODULES=n)\n");
			return KSFT_SKIP;
		}
		/* ENOEXEC (vermagic), EKEYREJECTED...: a broken build, never a skip */
		printf("TAP version 13\n1..1\nnot ok 1 load # finit_module(%s): %s\n", argv[1], strerror(e));
		return KSFT_FAIL;
	}
	close(fd);
	fd = open(RESULTS, O_RDONLY);
	n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	syscall(SYS_delete_module, "gmem_conv_workload", O_NONBLOCK);
	if (n < 0) {
		printf("TAP version 13\n1..1\nnot ok 1 results # cannot read %s\n", RESULTS);
		return KSFT_FAIL;
	}
	buf[n] = '\0';
	fputs(buf, stdout);
	return strstr(buf, "not ok ") ? KSFT_FAIL : KSFT_PASS;
}
