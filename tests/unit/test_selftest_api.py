"""Selftest library API detection: C declarations counted from header text, facts -> -DSNPH_* macros."""

from __future__ import annotations

import json

import pytest

from harness.kernel.selftest_api import (
    FUNCTIONS, SelftestApi, arch_include_dir, detect, param_counts, scan, strip_comments, struct_members)

# Shaped like the two supported trees' headers (declarations only, trimmed).
KVM_UTIL_H = """\
struct vm_shape {
	u32 type;
	u8  mode;
	u8  pad0;
	u16 pad1;
};
struct kvm_vm {
	int mode;
	struct { int a; } nested;
	gpa_t gpa_tag_mask;
	u32 memslots[NR_MEM_REGIONS];
};
/* void vm_mem_add(int commented_out); */
void vm_mem_add(struct kvm_vm *vm, enum vm_mem_backing_src_type src_type,
		gpa_t gpa, u32 slot, u64 npages, u32 flags,
		int guest_memfd_fd, u64 guest_memfd_offset);
static inline int vm_create_guest_memfd(struct kvm_vm *vm, u64 size, u64 flags)
{
	int fd = __vm_create_guest_memfd(vm, size, flags);
	return fd;
}
struct kvm_vm *____vm_create(struct vm_shape shape);
static inline struct kvm_vm *vm_create_barebones(void)
{
	return ____vm_create(VM_SHAPE_DEFAULT);
}
void kvm_arch_vm_post_create(struct kvm_vm *vm%s);
"""
SNP_HELPERS = """\
#define SNP_POLICY_SMT		(1ULL << 16)
void snp_vm_launch_start(struct kvm_vm *vm, u64 policy);
void snp_vm_launch_update(struct kvm_vm *vm);
void snp_vm_launch_finish(struct kvm_vm *vm);
static inline u64 snp_default_policy(void)
{
	return SNP_POLICY_RSVD_MBO | (is_smt_on() ? SNP_POLICY_SMT : 0);
}
"""
SEV_H = """\
#define __vm_sev_ioctl(vm, cmd, arg)					\\
({									\\
	int r;								\\
	r = __vm_ioctl(vm, KVM_MEMORY_ENCRYPT_OP, &sev_cmd.raw);	\\
	r ?: sev_cmd.c.error;						\\
})
#define vm_sev_ioctl(vm, cmd, arg)					\\
({									\\
	int ret = __vm_sev_ioctl(vm, cmd, arg);				\\
})
"""
KVM_UTIL_ARCH_H = "struct kvm_vm_arch {\n\tu64 c_bit;\n\tint sev_fd;\n\tbool is_pt_protected;\n};\n"
UAPI = {"include/uapi/linux/kvm.h": "#define KVM_CAP_GUEST_MEMFD 234\n#define GUEST_MEMFD_FLAG_MMAP (1ULL << 0)\n"
                                    "/* #define GUEST_MEMFD_FLAG_INIT_SHARED (1ULL << 1) */\n"}


def tree(arch: str, snp: bool) -> dict[str, str]:
    """A 6.12-like (x86_64/, no SNP helpers) or 7.3-like (x86/, SNP helpers) header set."""
    return {"include/kvm_util.h": KVM_UTIL_H % (", unsigned int nr_vcpus" if snp else ""),
            f"include/{arch}/sev.h": SEV_H + (SNP_HELPERS if snp else ""),
            f"include/{arch}/kvm_util_arch.h": KVM_UTIL_ARCH_H,
            "include/arm64/processor.h": "void vm_mem_add(int only_arm64);\n"}


# ---- the C scanner ---------------------------------------------------------

@pytest.mark.parametrize("text, name, counts", [
    ("void f(int a, int b);", "f", [2]),
    ("struct kvm_vm *f(struct vm_shape shape);", "f", [1]),
    ("static inline u64 f(void) { return g(1); }", "f", [0]),
    ("int f();", "f", [0]),
    ("void f(void (*cb)(int, int), int n[2], struct { int a, b; } s);", "f", [3]),
    ("x = f(1, 2); return f(3); if (f(4)) ; y->f(5); z.f(6); (void)f(7); !f(8);", "f", []),
    ("#define f(vm, cmd, arg) do_f(vm, cmd, arg)", "f", [3]),
    ("#define f (1 + 2)", "f", []),
    ("#define f(...) g(__VA_ARGS__)", "f", [1]),
    ("void ff(int a); void f_(int a); void f(int a,\n\t   int b,\n\t   int c);", "f", [3]),
    ("void f(int a", "f", []),  # unbalanced: nothing, no exception
    ("void __f(int a); void f(int a, int b);", "__f", [1]),
])
def test_param_counts(text, name, counts):
    assert param_counts(strip_comments(text), name) == counts


def test_comments_hide_declarations_and_continuations_join_macros():
    text = strip_comments("/* void f(int a); */\n// void f(int a, int b);\n#define g(a, \\\n b) a\n")
    assert param_counts(text, "f") == []
    assert param_counts(text, "g") == [2]


def test_struct_members():
    text = strip_comments(KVM_UTIL_H % "")
    assert struct_members(text, "vm_shape") == {"type", "mode", "pad0", "pad1"}
    assert struct_members(text, "kvm_vm") == {"mode", "nested", "gpa_tag_mask", "memslots"}
    assert struct_members(text, "kvm_vm_arch") is None
    assert struct_members("struct s { int a;", "s") is None


@pytest.mark.parametrize("names, arch", [
    ({"include/kvm_util.h", "include/x86_64/sev.h", "include/aarch64/processor.h"}, "x86_64"),
    ({"include/x86/svm_util.h", "include/x86/processor.h"}, "x86"),
    ({"include/kvm_util.h", "include/arm64/processor.h"}, None),
    ({"include/x86/deeper/sev.h"}, None),
])
def test_arch_include_dir(names, arch):
    assert arch_include_dir(names) == arch


# ---- facts and macros ------------------------------------------------------

def test_a_library_without_snp_helpers():
    api = scan(tree("x86_64", snp=False), UAPI)
    assert (api.arch_include, api.sev_h, api.snp_lib) == ("x86_64", True, False)
    assert api.functions["vm_mem_add"] == 8, "the arm64 header is not read"
    assert api.functions["vm_create_guest_memfd"] == 3 and api.functions["____vm_create"] == 1
    assert api.functions["kvm_arch_vm_post_create"] == 1
    assert api.functions["vm_sev_ioctl"] == 3 and api.functions["__vm_sev_ioctl"] == 3
    assert api.functions["snp_vm_launch_start"] is None and api.functions["vm_vcpu_add"] is None
    assert api.members == {"vm_shape": ("type",), "kvm_vm": ("gpa_tag_mask",),
                           "kvm_vm_arch": ("sev_fd", "c_bit", "is_pt_protected")}
    assert api.uapi == ("KVM_CAP_GUEST_MEMFD", "GUEST_MEMFD_FLAG_MMAP"), "a commented-out define is no define"
    assert api.problems == ()
    macros = api.macros()
    assert macros["SNPH_API"] == 1 and macros["SNPH_HAVE_SNP_LIB"] == 0 and macros["SNPH_HAVE_SEV_H"] == 1
    assert macros["SNPH_VM_MEM_ADD_ARGS"] == 8 and macros["SNPH_____VM_CREATE_ARGS"] == 1
    assert macros["SNPH_SNP_VM_LAUNCH_START_ARGS"] == -1
    assert macros["SNPH_HAVE_VM_SHAPE_TYPE"] == 1 and macros["SNPH_HAVE_KVM_VM_ARCH_IS_PT_PROTECTED"] == 1


def test_a_library_with_snp_helpers():
    api = scan(tree("x86", snp=True), {})
    assert (api.arch_include, api.snp_lib) == ("x86", True)
    assert api.functions["kvm_arch_vm_post_create"] == 2
    assert api.functions["snp_default_policy"] == 0 and api.functions["snp_vm_launch_start"] == 2
    assert api.macros()["SNPH_HAVE_SNP_LIB"] == 1 and api.uapi == ()


def test_snp_helpers_with_another_shape_are_not_the_snp_library():
    headers = tree("x86", snp=True)
    headers["include/x86/sev.h"] = headers["include/x86/sev.h"].replace("u64 policy", "u64 policy, int x")
    assert not scan(headers, {}).snp_lib


def test_every_function_gets_a_macro_and_cflags_are_plain_defines():
    api = scan(tree("x86", snp=True), {})
    assert set(api.functions) == set(FUNCTIONS)
    flags = api.cflags()
    assert flags[0] == "-DSNPH_API=1"
    assert "-DSNPH_VM_MEM_ADD_ARGS=8" in flags and "-DSNPH___VM_SET_USER_MEMORY_REGION2_ARGS=-1" in flags
    assert len(flags) == len(FUNCTIONS) + 8  # SNPH_API, HAVE_SEV_H, HAVE_SNP_LIB, 5 members


def test_conflicting_declarations_are_a_problem_not_an_error():
    headers = tree("x86", snp=True)
    headers["include/test_util.h"] = "void vm_mem_add(int a);\n"
    api = scan(headers, {})
    assert api.functions["vm_mem_add"] == 1
    assert any("vm_mem_add() is declared with 1 and 8 parameters" in p for p in api.problems)


@pytest.mark.parametrize("headers", [{}, {"include/kvm_util.h": "struct vm_shape {"},
                                     {"include/x86/sev.h": "\x00 void ((( ;;; #define"}])
def test_scan_never_raises(headers):
    api = scan(headers, {"x": "#define"})
    assert api.snp_lib is False and api.problems


def test_round_trip_and_json():
    api = scan(tree("x86_64", snp=False), UAPI)
    data = json.loads(json.dumps(api.to_dict()))
    assert SelftestApi.from_dict(data) == api
    assert data["snp_lib"] is False and data["macros"]["SNPH_VM_MEM_ADD_ARGS"] == 8


def test_detect_reads_the_tree(tmp_path):
    inc = tmp_path / "tools/testing/selftests/kvm/include"
    for rel, text in tree("x86_64", snp=False).items():
        (inc.parent / rel).parent.mkdir(parents=True, exist_ok=True)
        (inc.parent / rel).write_text(text)
    (tmp_path / "include/uapi/linux").mkdir(parents=True)
    (tmp_path / "include/uapi/linux/kvm.h").write_text(UAPI["include/uapi/linux/kvm.h"])
    assert detect(tmp_path) == scan(tree("x86_64", snp=False), UAPI)
    missing = detect(tmp_path / "nowhere")
    assert missing.arch_include is None and len(missing.problems) >= 2
