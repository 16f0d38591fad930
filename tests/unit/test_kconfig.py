"""Kernel config: parsers, dropped-option detection and explanation, the cache digest, make_config."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.kernel.kconfig import (
    MAKE_TARGETS, ConfigRequest, Dropped, FragmentResult, KconfigError, explain_dropped, find_dropped,
    kconfig_dependencies, kconfig_index, make_config, parse_config, parse_fragment, run_captured,
    unmet_symbols)

DATA = Path(__file__).resolve().parents[1] / "data" / "kconfig"
SRCTREE = DATA / "srctree-6.12"
CONFIGS = Path(__file__).resolve().parents[2] / "kernel-patches" / "configs"
DROPPED = "tinyconfig-kvm-amd-sev-dropped"
STICKS = "tinyconfig-local-target"


def text(name: str) -> str:
    return (DATA / name).read_text()


# ---- parse_config / parse_fragment ----------------------------------------------------------

def test_parse_config_values_quotes_and_not_set():
    cfg = parse_config([
        "#", "# Automatically generated file; DO NOT EDIT.", "#",
        "CONFIG_KVM=y", "CONFIG_KVM_AMD=m", "# CONFIG_KVM_INTEL is not set",
        "CONFIG_NR_CPUS=8", 'CONFIG_CMDLINE="console=ttyS0 panic=-1"', "CONFIG_PHYSICAL_START=0x1000000\n",
        "", "some junk", "# CONFIG_X is not set, really",
    ])
    assert cfg == {"KVM": "y", "KVM_AMD": "m", "KVM_INTEL": "n", "NR_CPUS": "8",
                   "CMDLINE": '"console=ttyS0 panic=-1"', "PHYSICAL_START": "0x1000000"}


def test_parse_config_real_capture():
    cfg = parse_config(text(f"{DROPPED}.config"))  # a str is split into lines
    assert cfg["CC_VERSION_TEXT"] == '"gcc (Debian 12.2.0-14+deb12u1) 12.2.0"'
    assert (cfg["KVM"], cfg["KVM_AMD"], cfg["THERMAL"], cfg["CRYPTO"]) == ("y", "y", "y", "n")
    assert "KVM_AMD_SEV" not in cfg  # unmet dependencies: not even written as "is not set"


def test_parse_fragment_clean():
    assert parse_fragment(["# comment", "", "CONFIG_KVM=y", "# CONFIG_KVM_INTEL is not set",
                           'CONFIG_CMDLINE="a b"', "CONFIG_NR_CPUS=8"]) == FragmentResult(
        {"KVM": "y", "KVM_INTEL": "n", "CMDLINE": '"a b"', "NR_CPUS": "8"}, ())


def test_parse_fragment_records_malformed_lines():
    result = parse_fragment([
        "CONFIG_KVM=y",
        "KVM_AMD=y",
        "CONFIG_DEBUG_FS = y",
        "CONFIG_EMPTY=",
        "CONFIG_TRAILING=y # note",
        "#CONFIG_SPACELESS is not set",
        "CONFIG_KVM=n",
    ])
    assert result.options == {"KVM": "n"}
    assert result.problems == (
        "line 2: not a CONFIG_ assignment: 'KVM_AMD=y'",
        "line 3: not a CONFIG_ assignment: 'CONFIG_DEBUG_FS = y'",
        "line 4: bad value for CONFIG_EMPTY: 'CONFIG_EMPTY='",
        "line 5: bad value for CONFIG_TRAILING: 'CONFIG_TRAILING=y # note'",
        "line 6: not the exact '# CONFIG_X is not set' form, merge_config.sh ignores it: "
        "'#CONFIG_SPACELESS is not set'",
        "line 7: CONFIG_KVM set again (y -> n)",
    )


@pytest.mark.parametrize("name", ["local-target.config", "snp-host.config"])
def test_repo_fragments_parse_cleanly(name):
    result = parse_fragment((CONFIGS / name).read_text())
    assert result.problems == ()
    for option in ("KVM", "KVM_AMD", "KVM_AMD_SEV", "KVM_SW_PROTECTED_VM", "EXPERT", "DEBUG_FS",
                   "TRANSPARENT_HUGEPAGE", "FTRACE", "EVENT_TRACING", "IKCONFIG_PROC", "KEXEC_FILE"):
        assert result.options[option] == "y", option


# ---- find_dropped -----------------------------------------------------------------------------

def test_find_dropped_absent_counts_as_n():
    requested = {"A": "y", "B": "n", "C": "n", "D": "m", "E": "8", "F": "y"}
    final = {"A": "y", "C": "y", "D": "y", "E": "64"}
    assert find_dropped(requested, final) == [
        Dropped("C", "n", "y"), Dropped("D", "m", "y"), Dropped("E", "8", "64"), Dropped("F", "y", "n")]


def test_find_dropped_on_captures():
    final = parse_config(text(f"{DROPPED}.config"))
    assert find_dropped(parse_fragment(text(f"{DROPPED}.fragment")).options, final) == [
        Dropped("KVM_AMD_SEV", "y", "n"), Dropped("KVM_AMD_SEV_SNP", "y", "n"), Dropped("THERMAL", "n", "y")]
    sticks = parse_fragment(text(f"{STICKS}.fragment"))
    assert sticks.problems == () and len(sticks.options) > 80
    assert find_dropped(sticks.options, parse_config(text(f"{STICKS}.config"))) == []


# ---- unmet_symbols ----------------------------------------------------------------------------

SEV_DEP = "CRYPTO_DEV_SP_PSP && !(KVM_AMD=y && CRYPTO_DEV_CCP_DD=m)"
CCP_DEP = "((X86 && PCI) || (ARM64 && (OF_ADDRESS || ACPI))) && HAS_IOMEM"


@pytest.mark.parametrize("expr, final, unmet", [
    ("KVM_AMD && X86_64", {"KVM_AMD": "y", "X86_64": "y"}, []),
    ("KVM_AMD && X86_64", {"X86_64": "y"}, ["KVM_AMD"]),
    ("KVM_AMD && X86_64", {"KVM_AMD": "m", "X86_64": "n"}, ["X86_64"]),
    ("CPU_SUP_AMD || ARM64", {}, ["CPU_SUP_AMD", "ARM64"]),
    ("CPU_SUP_AMD || ARM64", {"CPU_SUP_AMD": "y"}, []),
    ("!KASAN", {"KASAN": "y"}, ["KASAN"]),
    ("!KASAN", {"KASAN": "m"}, ["KASAN"]),
    ("!KASAN", {}, []),
    ("KVM && ((EXPERT && !KASAN) || WERROR)", {"KVM": "y", "EXPERT": "y", "KASAN": "y"}, ["KASAN", "WERROR"]),
    (SEV_DEP, {"CRYPTO_DEV_SP_PSP": "y", "KVM_AMD": "y", "CRYPTO_DEV_CCP_DD": "m"}, ["KVM_AMD", "CRYPTO_DEV_CCP_DD"]),
    (SEV_DEP, {"CRYPTO_DEV_SP_PSP": "y", "KVM_AMD": "y", "CRYPTO_DEV_CCP_DD": "y"}, []),
    (SEV_DEP, {"KVM_AMD": "y"}, ["CRYPTO_DEV_SP_PSP"]),
    ("SERIAL_8250=y", {"SERIAL_8250": "m"}, ["SERIAL_8250"]),
    ("SERIAL_8250=y", {"SERIAL_8250": "y"}, []),
    ("KVM_INTEL != y", {"KVM_INTEL": "y"}, ["KVM_INTEL"]),
    ("KVM_INTEL != y", {}, []),
    ("KVM_INTEL=n", {}, []),
    ('CMDLINE = "x"', {"CMDLINE": '"x"'}, []),
    ("NR_CPUS > 1", {"NR_CPUS": "1"}, ["NR_CPUS"]),
    ("NR_CPUS > 1", {"NR_CPUS": "8"}, []),
    (CCP_DEP, {"X86": "y", "ACPI": "y", "HAS_IOMEM": "y"}, ["PCI", "ARM64"]),
    (CCP_DEP, {"X86": "y", "PCI": "y"}, ["HAS_IOMEM"]),
    ("64BIT", {}, ["64BIT"]),  # symbols may start with a digit
    ("y", {}, []),
    ('"$(ARCH)" = "x86"', {}, []),  # no symbol to blame
    ("(A && ", {}, ["A"]),  # malformed: never raises
    ("&& || )", {}, []),
    ("", {}, []),
])
def test_unmet_symbols(expr, final, unmet):
    assert unmet_symbols(expr, final) == unmet


# ---- Kconfig reading --------------------------------------------------------------------------

def test_kconfig_dependencies_own_then_inherited_across_source():
    assert kconfig_dependencies(SRCTREE, "KVM_AMD_SEV") == [
        "KVM_AMD && X86_64", SEV_DEP, "VIRTUALIZATION"]
    # drivers/crypto/ccp/Kconfig is sourced inside `if CRYPTO_DEV_CCP` inside `if CRYPTO_HW`,
    # and drivers/crypto/Kconfig inside crypto/Kconfig's `if CRYPTO`
    assert kconfig_dependencies(SRCTREE, "CRYPTO_DEV_SP_PSP") == [
        "CRYPTO_DEV_CCP_DD && X86_64 && AMD_IOMMU", "CRYPTO_DEV_CCP", "CRYPTO_HW", "CRYPTO"]
    assert kconfig_dependencies(SRCTREE, "AMD_IOMMU") == [
        "X86_64 && PCI && ACPI && HAVE_CMPXCHG_DOUBLE", "IOMMU_SUPPORT"]
    assert kconfig_dependencies(SRCTREE, "CRYPTO") == []
    assert kconfig_dependencies(SRCTREE, "NO_SUCH_OPTION") == []


def test_kconfig_index_selects_and_prompts():
    idx = kconfig_index(SRCTREE)
    assert idx.selected_by["THERMAL"] == ["ACPI_PROCESSOR", "ACPI_THERMAL"]
    (sev,) = idx.entries["KVM_AMD_SEV"]
    assert (sev.path, sev.line, sev.has_prompt) == ("arch/x86/kvm/Kconfig", 140, True)
    assert idx.entries["X86_64"][0].has_prompt is False  # def_bool


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(body)
    return root


def test_kconfig_blocks_help_text_comments_and_multiple_definitions(tmp_path):
    tree = write_tree(tmp_path, {
        "Kconfig": 'source "sub/Kconfig"\nsource "Kconfig"\nsource "arch/$(SRCARCH)/Kconfig"\n',
        "arch/x86/Kconfig": "config TWICE\n\tbool \"b\"\n\tdepends on X86_ONLY\n",
        "sub/Kconfig": "\n".join([
            'menu "Things"',
            "\tdepends on MENU_DEP # trailing comment",
            "",
            "config IN_MENU",
            '\tbool "in menu" if EXPERT',
            "\tdepends on A && \\",
            "\t\tB",
            "\thelp",
            "\t  config NOT_AN_ENTRY",
            "",
            "\t  if you say Y here, endif",
            "\t  source \"nowhere/Kconfig\"",
            "endmenu",
            "choice",
            '\tprompt "pick"',
            "\tdepends on CHOICE_DEP",
            "config CHOSEN",
            '\tbool "c"',
            "endchoice",
            "config TWICE",
            '\ttristate "t"',
            "\tdepends on GENERIC",
            "config OUTSIDE",
            "\tbool",
            "",
        ]),
    })
    idx = kconfig_index(tree)
    assert "NOT_AN_ENTRY" not in idx.entries
    assert kconfig_dependencies(tree, "IN_MENU") == ["EXPERT", "A && B", "MENU_DEP"]
    assert kconfig_dependencies(tree, "CHOSEN") == ["CHOICE_DEP"]
    assert kconfig_dependencies(tree, "OUTSIDE") == []
    assert kconfig_dependencies(tree, "TWICE") == ["GENERIC || X86_ONLY"]
    assert unmet_symbols(kconfig_dependencies(tree, "TWICE")[0], {"X86_ONLY": "y"}) == []


def test_explain_dropped_on_captured_pair():
    final = parse_config(text(f"{DROPPED}.config"))
    dropped = find_dropped(parse_fragment(text(f"{DROPPED}.fragment")).options, final)
    assert explain_dropped(dropped, SRCTREE, final).splitlines() == [
        "CONFIG_KVM_AMD_SEV=y was dropped (now n): depends on KVM_AMD && X86_64 && CRYPTO_DEV_SP_PSP"
        " && !(KVM_AMD=y && CRYPTO_DEV_CCP_DD=m) && VIRTUALIZATION; unmet: CRYPTO_DEV_SP_PSP;"
        " unmet further down: CRYPTO_DEV_CCP_DD, AMD_IOMMU, CRYPTO_DEV_CCP, CRYPTO_HW, CRYPTO, PCI,"
        " IOMMU_SUPPORT",
        "CONFIG_KVM_AMD_SEV_SNP=y was dropped (now n): CONFIG_KVM_AMD_SEV_SNP does not exist in this"
        " tree (a typo or a removed option)",
        "CONFIG_THERMAL=n was dropped (now y): selected by ACPI_PROCESSOR, ACPI_THERMAL",
    ]


def test_explain_dropped_promptless_and_undefined_dependency(tmp_path):
    tree = write_tree(tmp_path, {"Kconfig": "config HIDDEN\n\tbool\nconfig ARMY\n\tbool \"a\"\n"
                                            "\tdepends on ARM64 || PRESENT\nconfig PRESENT\n\tbool \"p\"\n"})
    text_ = explain_dropped([Dropped("HIDDEN", "y", "n"), Dropped("ARMY", "y", "n")], tree, {})
    assert text_.splitlines() == [
        "CONFIG_HIDDEN=y was dropped (now n): no depends on; it has no prompt, so only a select can turn it on",
        "CONFIG_ARMY=y was dropped (now n): depends on (ARM64 || PRESENT); "
        "unmet: ARM64 (not in x86's Kconfig), PRESENT",
    ]


# ---- ConfigRequest ----------------------------------------------------------------------------

def test_config_request_validates_base():
    with pytest.raises(ConfigError, match="unknown config base 'olddefconfig'"):
        ConfigRequest(base="olddefconfig")
    with pytest.raises(KconfigError, match="needs the running config"):
        ConfigRequest(base="running")
    req = ConfigRequest(base="tinyconfig", fragments=[str(DATA / f"{DROPPED}.fragment")])
    assert req.fragments == (DATA / f"{DROPPED}.fragment",)
    assert set(MAKE_TARGETS) == {"tinyconfig", "x86_64_defconfig", "defconfig", "allnoconfig"}


def test_inputs_digest_is_stable_and_keyed_on_contents(tmp_path):
    a, b, a_copy = tmp_path / "a.config", tmp_path / "b.config", tmp_path / "elsewhere.config"
    a.write_text("CONFIG_KVM=y\n")
    b.write_text("CONFIG_DEBUG_FS=y\n")
    a_copy.write_text("CONFIG_KVM=y\n")
    base = ConfigRequest(base="tinyconfig", fragments=(a, b))
    digest = base.inputs_digest()
    assert len(digest) == 64 and digest == ConfigRequest(base="tinyconfig", fragments=(a, b)).inputs_digest()
    assert ConfigRequest(base="tinyconfig", fragments=(a_copy, b)).inputs_digest() == digest  # not paths
    changed = {
        "base": ConfigRequest(base="defconfig", fragments=(a, b)),
        "order": ConfigRequest(base="tinyconfig", fragments=(b, a)),
        "fewer": ConfigRequest(base="tinyconfig", fragments=(a,)),
    }
    digests = {k: r.inputs_digest() for k, r in changed.items()}
    a.write_text("CONFIG_KVM=m\n")
    digests["content"] = base.inputs_digest()
    assert digest not in digests.values() and len(set(digests.values())) == len(digests)


def test_inputs_digest_base_file_and_running_text(tmp_path):
    f = tmp_path / "base.config"
    f.write_text("CONFIG_KVM=y\n")
    from_file = ConfigRequest(base=f"file:{f}").inputs_digest()
    running = ConfigRequest(base="running", running_config="CONFIG_KVM=y\n").inputs_digest()
    assert from_file != running  # same text, different kind of base
    assert ConfigRequest(base=f"file:{f}").inputs_digest() == from_file
    assert ConfigRequest(base="running", running_config="CONFIG_KVM=m\n").inputs_digest() != running
    f.write_text("CONFIG_KVM=m\n")
    assert ConfigRequest(base=f"file:{f}").inputs_digest() != from_file
    with pytest.raises(KconfigError, match="cannot read config fragment"):
        ConfigRequest(base="tinyconfig", fragments=(tmp_path / "missing.config",)).inputs_digest()


# ---- make_config with a fake runner -----------------------------------------------------------

class FakeMake:
    """Stands in for make and merge_config.sh: records argv and writes .config files."""

    def __init__(self, final: str, base: str = "# base from make\n") -> None:
        self.final, self.base, self.calls = final, base, []
        self.merged_from: str | None = None

    def __call__(self, argv, cwd):
        self.calls.append((tuple(argv), Path(cwd)))
        config = Path(cwd) / ".config"
        if argv[-1] in MAKE_TARGETS:
            config.write_text(self.base)
        elif argv[0] == "sh":
            self.merged_from = config.read_text()
        elif argv[-1] == "olddefconfig":
            config.write_text(self.final)


def test_make_config_argv_sequence(tmp_path):
    build = tmp_path / "build"
    first = tmp_path / "first.config"
    first.write_text("# CONFIG_KVM is not set\nCONFIG_DEBUG_FS=y\n")
    frags = (first, DATA / f"{STICKS}.fragment")
    fake = FakeMake(text(f"{STICKS}.config"))
    final = make_config(SRCTREE, build, ConfigRequest(base="tinyconfig", fragments=frags),
                        make_args=["CC=ccache gcc"], run=fake)
    make = ("make", "-C", str(SRCTREE), f"O={build}", "CC=ccache gcc")
    assert fake.calls == [
        ((*make, "tinyconfig"), build),
        (("sh", str(SRCTREE / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build),
          str(build / ".config"), *map(str, frags)), build),
        ((*make, "olddefconfig"), build),
    ]
    assert fake.merged_from == "# base from make\n"
    assert final == parse_config(text(f"{STICKS}.config"))  # the later fragment's values won


def test_make_config_base_file_or_running_text_skips_the_make_target(tmp_path):
    base = tmp_path / "host.config"
    base.write_text("CONFIG_KVM=m\n")
    for request in (ConfigRequest(base=f"file:{base}"),
                    ConfigRequest(base="running", running_config="CONFIG_KVM=m\n")):
        build = tmp_path / request.base[:4]
        fake = FakeMake("CONFIG_KVM=m\n")
        assert make_config(SRCTREE, build, request, run=fake) == {"KVM": "m"}
        assert fake.calls == [(("make", "-C", str(SRCTREE), f"O={build}", "olddefconfig"), build)]


def test_make_config_dropped_option_names_fragment_and_dependencies(tmp_path):
    frag = DATA / f"{DROPPED}.fragment"
    fake = FakeMake(text(f"{DROPPED}.config"))
    with pytest.raises(ConfigError) as info:
        make_config(SRCTREE, tmp_path / "b", ConfigRequest(base="tinyconfig", fragments=(frag,)), run=fake)
    err = info.value
    assert isinstance(err, KconfigError)
    assert [d.option for d in err.dropped] == ["KVM_AMD_SEV", "KVM_AMD_SEV_SNP", "THERMAL"]
    lines = str(err).splitlines()
    assert lines[0] == f"3 requested option(s) did not survive olddefconfig in {tmp_path / 'b' / '.config'}:"
    assert lines[1].startswith(f"  {frag.name}: CONFIG_KVM_AMD_SEV=y was dropped (now n): depends on KVM_AMD")
    assert "unmet: CRYPTO_DEV_SP_PSP;" in lines[1]
    assert lines[3] == f"  {frag.name}: CONFIG_THERMAL=n was dropped (now y): selected by ACPI_PROCESSOR, ACPI_THERMAL"


def test_make_config_bad_fragment_fails_before_make(tmp_path):
    bad = tmp_path / "bad.config"
    bad.write_text("CONFIG_KVM=y\nKVM_AMD=y\n")
    fake = FakeMake("")
    with pytest.raises(KconfigError, match=r"(?s)bad.config.*line 2: not a CONFIG_ assignment"):
        make_config(SRCTREE, tmp_path / "b", ConfigRequest(base="tinyconfig", fragments=(bad,)), run=fake)
    with pytest.raises(KconfigError, match="cannot read config fragment"):
        make_config(SRCTREE, tmp_path / "b", ConfigRequest(base="tinyconfig", fragments=(tmp_path / "no",)),
                    run=fake)
    assert fake.calls == []


def test_run_captured_raises_with_output_tail(tmp_path):
    run_captured(["sh", "-c", "exit 0"], tmp_path)
    with pytest.raises(KconfigError, match=r"(?s)exited 3:.*line 29\nline 30$") as info:
        run_captured(["sh", "-c", "seq -f 'line %g' 1 30; exit 3"], tmp_path)
    assert "line 10\n" not in str(info.value)  # only the tail
    with pytest.raises(KconfigError, match="no-such-make"):
        run_captured(["no-such-make", "olddefconfig"], tmp_path)


def _promptless_tree(root: Path, selectors: list[str]) -> Path:
    """A tree whose SYSCTL has no prompt (6.12's layout): only `select` turns it on."""
    body = "config PROC_FS\n\tbool \"proc\"\n\nconfig SYSCTL\n\tbool\n\n"
    for s in selectors:
        body += f"config {s}\n\tbool \"{s}\"\n\tdepends on PROC_FS\n\tselect SYSCTL\n\n"
    (root / "Kconfig").parent.mkdir(parents=True, exist_ok=True)
    (root / "Kconfig").write_text(body)
    return root


class TwoRoundMake(FakeMake):
    """olddefconfig sets SYSCTL only when the merged config asks for PROC_SYSCTL (a `select`)."""

    def __call__(self, argv, cwd):
        self.calls.append((tuple(argv), Path(cwd)))
        config = Path(cwd) / ".config"
        if argv[-1] in MAKE_TARGETS:
            config.write_text("")
        elif argv[0] == "sh":
            merged = "".join(Path(f).read_text() for f in argv[6:])
            config.write_text(merged)
        elif argv[-1] == "olddefconfig":
            have = parse_config(config.read_text())
            sysctl = "y" if have.get("PROC_SYSCTL") == "y" else "n"
            config.write_text(f"CONFIG_PROC_FS=y\nCONFIG_PROC_SYSCTL={have.get('PROC_SYSCTL', 'n')}\n"
                              f"CONFIG_SYSCTL={sysctl}\n")


def test_make_config_promptless_option_is_reached_through_its_one_selector(tmp_path):
    tree = _promptless_tree(tmp_path / "tree", ["PROC_SYSCTL"])
    frag = tmp_path / "f.config"
    frag.write_text("CONFIG_PROC_FS=y\nCONFIG_SYSCTL=y\n")
    fake = TwoRoundMake("")
    final = make_config(tree, tmp_path / "b", ConfigRequest(base="tinyconfig", fragments=(frag,)), run=fake)
    assert final["SYSCTL"] == "y" and final["PROC_SYSCTL"] == "y"
    merges = [argv for argv, _ in fake.calls if argv[0] == "sh"]
    assert len(merges) == 2 and merges[1][-1].endswith("snp-harness-selectors.config")
    assert (tmp_path / "b" / "snp-harness-selectors.config").read_text() == "CONFIG_PROC_SYSCTL=y\n"


def test_make_config_promptless_option_with_several_selectors_stays_an_error(tmp_path):
    tree = _promptless_tree(tmp_path / "tree", ["PROC_SYSCTL", "OTHER_SYSCTL"])
    frag = tmp_path / "f.config"
    frag.write_text("CONFIG_SYSCTL=y\n")
    fake = TwoRoundMake("")
    with pytest.raises(KconfigError, match="CONFIG_SYSCTL=y was dropped.*selected by OTHER_SYSCTL, PROC_SYSCTL"):
        make_config(tree, tmp_path / "b", ConfigRequest(base="tinyconfig", fragments=(frag,)), run=fake)
    assert len([a for a, _ in fake.calls if a[0] == "sh"]) == 1  # nothing guessed, no second round
