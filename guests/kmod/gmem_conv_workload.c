// SPDX-License-Identifier: GPL-2.0
/*
 * gmem_conv_workload - make the guest kernel convert memory between private
 * and shared, repeatedly, and check data integrity throughout.
 *
 * Part of snp-harness; loaded inside a guest by guests/guest_conversion_workload.
 * In an SNP guest set_memory_decrypted()/set_memory_encrypted() issue page
 * state changes (GHCB) and PVALIDATE, so the host converts the backing
 * guest_memfd pages and updates the RMP: that is the host path under test.
 * In a guest without memory encryption both calls return 0 at once, and the
 * data checks still run.
 *
 * Cases: one 4K page; a 2M-aligned 2M range (an order-9 allocation); a 2M
 * range straddling a 2M boundary (the middle 2M of an order-10 allocation).
 * Each round converts the range to shared, writes and checks a pattern
 * through the shared mapping, converts it back to private, writes and checks
 * another; the pages around the range (never converted) must keep their
 * contents the whole time. Plaintext is not preserved across a conversion
 * under SNP, so only data written after a conversion is checked.
 *
 * Results are KTAP lines in the read-only parameter `ktap`
 * (/sys/module/gmem_conv_workload/parameters/ktap). The module loads even
 * when a case failed, so that the results can be read; then rmmod it.
 */
#include <linux/cc_platform.h>
#include <linux/gfp.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/set_memory.h>
#include <linux/sizes.h>
#include <linux/string.h>

static unsigned int rounds = 20;
module_param(rounds, uint, 0444);
MODULE_PARM_DESC(rounds, "conversion rounds per case");

static unsigned int max_ms = 30000;
module_param(max_ms, uint, 0444);
MODULE_PARM_DESC(max_ms, "stop a case after this long (ms), whatever rounds says");

static char ktap[3072];
module_param_string(ktap, ktap, sizeof(ktap), 0444);
MODULE_PARM_DESC(ktap, "results, as KTAP");

struct conv_case {
	const char *name;
	unsigned int order;		/* allocation order */
	unsigned long offset;		/* range start within the allocation, bytes */
	unsigned long size;		/* range size, bytes */
};

static const struct conv_case cases[] = {
	{ "4k",          2,  PAGE_SIZE,  PAGE_SIZE },
	{ "2m_aligned",  10, SZ_2M,      SZ_2M },
	{ "2m_straddle", 10, SZ_1M,      SZ_2M },
};

static size_t ktap_len;

static __printf(1, 2) void out(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ktap_len += vscnprintf(ktap + ktap_len, sizeof(ktap) - ktap_len, fmt, ap);
	va_end(ap);
}

static bool filled(const u8 *p, size_t len, u8 v, size_t *bad)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (p[i] != v) {
			*bad = i;
			return false;
		}
	}
	return true;
}

/* Returns 0, or -EIO with a diagnostic line written. */
static int run_case(const struct conv_case *c, unsigned int *done)
{
	unsigned long npages = c->size >> PAGE_SHIFT, total = PAGE_SIZE << c->order;
	unsigned long deadline = jiffies + msecs_to_jiffies(max_ms);
	struct page *pages;
	u8 *base, *range;
	size_t bad;
	int ret = 0, r = 0;
	unsigned int i;

	pages = alloc_pages(GFP_KERNEL, c->order);
	if (!pages) {
		out("# %s: cannot allocate order-%u pages\n", c->name, c->order);
		return -ENOMEM;
	}
	base = page_address(pages);
	range = base + c->offset;
	memset(base, 0xa5, total);	/* the neighbours' contents, never converted */

	for (i = 0; i < rounds && time_before(jiffies, deadline); i++) {
		u8 shared = 0x10 + (i & 0x3f), private = 0x80 + (i & 0x3f);

		r = set_memory_decrypted((unsigned long)range, npages);
		if (r) {
			out("# %s round %u: set_memory_decrypted: %d\n", c->name, i, r);
			ret = -EIO;
			break;	/* state unknown: never re-encrypt or free it (as the kernel does) */
		}
		memset(range, shared, c->size);
		if (!filled(range, c->size, shared, &bad)) {
			out("# %s round %u: shared byte %zu reads 0x%02x, wrote 0x%02x\n",
			    c->name, i, bad, range[bad], shared);
			ret = -EIO;
		}
		r = set_memory_encrypted((unsigned long)range, npages);
		if (r) {
			out("# %s round %u: set_memory_encrypted: %d\n", c->name, i, r);
			ret = -EIO;
			break;
		}
		memset(range, private, c->size);
		if (!filled(range, c->size, private, &bad)) {
			out("# %s round %u: private byte %zu reads 0x%02x, wrote 0x%02x\n",
			    c->name, i, bad, range[bad], private);
			ret = -EIO;
		}
		if (!filled(base, c->offset, 0xa5, &bad) ||
		    !filled(range + c->size, total - c->offset - c->size, 0xa5, &bad)) {
			out("# %s round %u: a neighbour of the range changed\n", c->name, i);
			ret = -EIO;
		}
		if (ret)
			break;
		cond_resched();
	}
	*done = i;
	if (!r)	/* a page left shared (decrypted) must not go back to the allocator */
		__free_pages(pages, c->order);
	return ret;
}

static int __init gmem_conv_workload_init(void)
{
	unsigned int i, done;
	int failed = 0, r;

	out("TAP version 13\n1..%zu\n", ARRAY_SIZE(cases));
	out("# memory encryption active: %s\n",
	    cc_platform_has(CC_ATTR_MEM_ENCRYPT) ? "yes" : "no (conversions are no-ops)");
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		done = 0;
		r = run_case(&cases[i], &done);
		out("# %s: %u conversion rounds of %lu pages\n", cases[i].name, done,
		    cases[i].size >> PAGE_SHIFT);
		out("%sok %u %s\n", r ? "not " : "", i + 1, cases[i].name);
		failed |= r;
	}
	pr_info("gmem_conv_workload: %s\n", failed ? "FAILED" : "passed");
	return 0;
}

static void __exit gmem_conv_workload_exit(void)
{
}

module_init(gmem_conv_workload_init);
module_exit(gmem_conv_workload_exit);
MODULE_DESCRIPTION("snp-harness: private<->shared conversions from inside a guest");
MODULE_LICENSE("GPL");
