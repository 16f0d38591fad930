"""Patch series: series files, subjects, mbox splitting, b4, git's messages, and apply_series on real git.

The files in tests/data/patches/ used here were made by `make-data.sh` in that directory: a throw-away
repo whose base is a.c holding "line 1".."line 20" (the `repo` fixture below builds the same base, so
the captured patches apply to it), `git format-patch` of three commits on top, and what git 2.39.5
printed when a patch did not apply. (series-two/ and series-conflict/ there belong to the integration
tests: they are made against a kernel tree.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import ConfigError, InfraError, PatchError
from harness.kernel import patches
from harness.kernel.patches import (
    GIT_IDENTITY, apply_series, conflicted_files, failed_hunks, fetch_b4, find_hunk, has_mail_headers,
    load_mbox, load_series, parse_series_file, patch_id, patch_subject, reset_worktree, split_mbox)

DATA = Path(__file__).resolve().parents[1] / "data" / "patches"
MBOX = DATA / "format-patch-3.mbox"
MBOX_SUBJECTS = [
    "a.c: spell out three",
    "KVM: SEV: spell out ten in a.c, with a subject long enough that git folds it",  # folded header
    "b.c: add x, as Jörg suggested",  # RFC 2047 encoded, split over two encoded words
]
SHOUT_TEN = DATA / "format-patch-shout-ten.patch"  # conflicts with patch 2 of the mbox
DIFF_U_TEN = DATA / "diff-ur-ten.diff"  # patch 2 of the mbox as plain `diff -ur` output


def data(name: str) -> str:
    return (DATA / name).read_text()


def mbox_message(n: int) -> bytes:
    return split_mbox(MBOX.read_bytes())[n - 1]


# ---- throw-away git repos -----------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _plain_git(monkeypatch):
    """git reads neither the user's nor the system's config (signing, hooks, default branch)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, check=True,
                       env={**os.environ, **GIT_IDENTITY})
    return r.stdout.decode().strip()


def make_repo(path: Path) -> str:
    """The base the data patches were made against; returns the base commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "a.c").write_text("".join(f"line {n}\n" for n in range(1, 21)))
    git(path, "add", "a.c")
    git(path, "commit", "-q", "-m", "base")
    return git(path, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "repo"
    return path, make_repo(path)


def make_series(directory: Path, files: dict[str, bytes | Path], series: str | None = None) -> Path:
    """A series directory holding `files` (in order) and a `series` file listing them."""
    directory.mkdir(parents=True)
    for name, content in files.items():
        (directory / name).write_bytes(content.read_bytes() if isinstance(content, Path) else content)
    (directory / "series").write_text(series if series is not None else "".join(f"{n}\n" for n in files))
    return directory


def git_patch_id(patch: bytes) -> str:
    r = subprocess.run(["git", "patch-id", "--stable"], input=patch, capture_output=True, check=True)
    return r.stdout.split()[0].decode()


def commit_patch_id(path: Path, commit: str) -> str:
    return git_patch_id(git(path, "show", commit).encode() + b"\n")


def assert_clean_at(path: Path, base: str) -> None:
    assert git(path, "rev-parse", "HEAD") == base
    assert git(path, "status", "--porcelain", "--untracked-files=no") == ""
    assert not (path / ".git" / "rebase-apply").exists()


# ---- series files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("lines, names, problems", [
    (["0001-a.patch", "0002-b.patch"], ["0001-a.patch", "0002-b.patch"], []),
    (["# KVM: SEV fixes", "", "   ", "0001-a.patch # why it is here", "0002-b.patch -p1", "\t0003-c.patch\n"],
     ["0001-a.patch", "0002-b.patch", "0003-c.patch"], []),
    (["# header", "0001-a.patch -p0", "0002-b.patch"],
     ["0001-a.patch", "0002-b.patch"], ["line 2: only -p1 patches are supported: '0001-a.patch -p0'"]),
    (["0001-a.patch -p1 -R"], ["0001-a.patch"], ["line 1: only -p1 patches are supported: '0001-a.patch -p1 -R'"]),
    (["# nothing but comments", ""], [], []),
], ids=["plain", "comments-blanks-p1", "p0", "reverse", "empty"])
def test_parse_series_file(lines, names, problems):
    assert parse_series_file(lines) == (names, problems)


def test_load_series(tmp_path):
    d = make_series(tmp_path / "sev-fixes", {"0001-three.patch": mbox_message(1), "0002-ten.diff": DIFF_U_TEN},
                    series="# two patches\n0001-three.patch\n\n0002-ten.diff -p1\n")
    series = load_series(d)
    assert (series.name, len(series)) == ("sev-fixes", 2)
    assert [(p.index, p.path, p.subject) for p in series.patches] == [
        (1, d / "0001-three.patch", "a.c: spell out three"),
        (2, d / "0002-ten.diff", "0002-ten.diff"),  # a bare diff is named after its file
    ]


@pytest.mark.parametrize("series, message", [
    (None, "{d}: no `series` file (a series directory lists its patches in `series`)"),
    ("# only a comment\n\n", "{s}: lists no patches"),
    ("0001-three.patch\n0002-gone.patch\n", "{s}: line for '0002-gone.patch': no such file {d}/0002-gone.patch"),
    ("0001-three.patch -p0\n", "{s}: line 1: only -p1 patches are supported: '0001-three.patch -p0'"),
], ids=["no-series-file", "empty", "missing-patch", "p0"])
def test_load_series_errors(tmp_path, series, message):
    d = tmp_path / "series-dir"
    d.mkdir()
    (d / "0001-three.patch").write_bytes(mbox_message(1))
    if series is not None:
        (d / "series").write_text(series)
    with pytest.raises(ConfigError) as e:
        load_series(d)
    assert str(e.value) == message.format(d=d, s=d / "series")


# ---- subjects and headers -----------------------------------------------------------------------

@pytest.mark.parametrize("text, subject", [
    ("From: A <a@x>\nSubject: [PATCH v2 3/7] KVM: SEV: fix the RMP walk\n\nbody\n", "KVM: SEV: fix the RMP walk"),
    ("Subject: [RFC PATCH v2 3/7] [stable-6.12] KVM: x\n\n", "KVM: x"),
    ("Subject: [PATCH] x86/sev: keep [RMP] when it is not a prefix\n\n", "x86/sev: keep [RMP] when it is not a prefix"),
    ("Subject: KVM: no prefix at all\n\n", "KVM: no prefix at all"),
    ("From: a\nSubject: [PATCH v2 3/7] KVM: SEV: a subject long\n enough to be folded\n\tby the mailer\nDate: x\n\n",
     "KVM: SEV: a subject long enough to be folded by the mailer"),
    ("Subject: [PATCH] =?UTF-8?q?KVM:=20SEV:=20credit=20J=C3=B6rg?=\n\n", "KVM: SEV: credit Jörg"),
    ("Subject: =?UTF-8?q?[PATCH=203/7]=20KVM:=20caf=C3=A9?=\n\n", "KVM: café"),  # prefix inside the encoding
    ("Subject: =?iso-8859-1?q?caf=E9?=\n\n", "café"),
    ("Subject: [PATCH 0/7]\n\n", "fallback.patch"),  # nothing left after the prefix
    ("From: a\n\nSubject: in the body, so not a header\n", "fallback.patch"),
    ("diff --git a/a.c b/a.c\n--- a/a.c\n+++ b/a.c\n@@ -1 +1 @@\n-x\n+y\n", "fallback.patch"),
    ("", "fallback.patch"),
], ids=["prefix", "many-prefixes", "inner-brackets", "no-prefix", "folded", "rfc2047", "rfc2047-prefix",
        "latin1", "only-prefix", "subject-in-body", "bare-diff", "empty"])
def test_patch_subject(text, subject):
    assert patch_subject(text, "fallback.patch") == subject


@pytest.mark.parametrize("word", ["=?x-unknown?q?abc?=", "=?utf-8?q?caf=E9?="], ids=["charset", "bytes"])
def test_patch_subject_bad_encoded_word_does_not_raise(word):
    assert isinstance(patch_subject(f"From: a\nSubject: [PATCH] {word}\n\n", "x.patch"), str)


@pytest.mark.parametrize("text, expected", [
    (mbox_message(1).decode(), True),
    ("From: a <a@x>\nSubject: x\n\nbody\n", True),
    ("From: a <a@x>\n\nSubject: x\n", False),  # Subject only in the body
    ("Subject: x\n\ndiff\n", False),
    (DIFF_U_TEN.read_text(), False),
], ids=["format-patch", "minimal", "subject-in-body", "no-from", "bare-diff"])
def test_has_mail_headers(text, expected):
    assert has_mail_headers(text) is expected


# ---- mbox ---------------------------------------------------------------------------------------

def test_split_mbox_format_patch():
    raw = MBOX.read_bytes()
    messages = split_mbox(raw)
    assert len(messages) == 3
    assert b"".join(messages) == raw  # nothing lost or added
    assert all(m.startswith(b"From ") and m.count(b"diff --git ") == 1 for m in messages)
    assert [patch_subject(m.decode(), "?") for m in messages] == MBOX_SUBJECTS


@pytest.mark.parametrize("raw, expected", [
    (b"", []),
    (b"\n  \n", []),
    (b"--- a/a.c\n+++ b/a.c\n@@ -1 +1 @@\n-x\n+y\n", [b"--- a/a.c\n+++ b/a.c\n@@ -1 +1 @@\n-x\n+y\n"]),
], ids=["empty", "blank", "bare-diff"])
def test_split_mbox_without_from_lines(raw, expected):
    assert split_mbox(raw) == expected


def test_split_mbox_body_line_starting_with_from():
    one = mbox_message(1).replace(b"\n\n---\n", b"\n\nFrom the SEV-SNP firmware ABI spec, publication 56860\n\n---\n")
    assert split_mbox(one + mbox_message(2)) == [one, mbox_message(2)]


def test_load_mbox(tmp_path):
    series = load_mbox(MBOX, tmp_path / "split")
    assert series.name == "format-patch-3"
    assert [(p.index, p.path, p.subject) for p in series.patches] == [
        (n, tmp_path / "split" / f"000{n}.patch", subject) for n, subject in enumerate(MBOX_SUBJECTS, 1)]
    assert [p.path.read_bytes() for p in series.patches] == split_mbox(MBOX.read_bytes())


def test_load_mbox_errors(tmp_path):
    missing, empty = tmp_path / "missing.mbox", tmp_path / "empty.mbox"
    empty.write_bytes(b"\n")
    with pytest.raises(ConfigError) as e:
        load_mbox(missing, tmp_path / "w")
    assert str(e.value) == f"cannot read mbox {missing}: [Errno 2] No such file or directory: '{missing}'"
    with pytest.raises(ConfigError) as e:
        load_mbox(empty, tmp_path / "w")
    assert str(e.value) == f"{empty}: contains no patches"


# ---- b4 -----------------------------------------------------------------------------------------

MSGID = "20241125.sev-snp.v3@example.org"


@pytest.fixture
def fake_b4(tmp_path, monkeypatch):
    """Installs a shell script as the `b4` fetch_b4 finds; returns a writer for its body."""
    script = tmp_path / "bin" / "b4"
    script.parent.mkdir()
    real_which = shutil.which
    monkeypatch.setattr(patches.shutil, "which",
                        lambda name, *a, **k: str(script) if name == "b4" else real_which(name, *a, **k))

    def install(body: str) -> Path:
        script.write_text("#!/bin/sh\n" + body)
        script.chmod(0o755)
        return script
    return install


def test_fetch_b4_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(patches.shutil, "which", lambda *a, **k: None)
    with pytest.raises(ConfigError) as e:
        fetch_b4(MSGID, tmp_path / "w")
    assert str(e.value) == "--series-msgid needs b4: `pip install b4` (or use --series/--mbox with local files)"


def test_fetch_b4_success(tmp_path, fake_b4):
    # b4 am -o DIR -n NAME MSGID writes DIR/NAME.mbx
    fake_b4(f'echo "$@" > "{tmp_path}/argv"\ncp "{MBOX}" "$3/$5.mbx"\n')
    series = fetch_b4(MSGID, tmp_path / "w")
    assert (tmp_path / "argv").read_text() == f"am -o {tmp_path / 'w'} -n series {MSGID}\n"
    assert [p.subject for p in series.patches] == MBOX_SUBJECTS
    assert [p.path for p in series.patches] == [tmp_path / "w" / "split" / f"000{n}.patch" for n in (1, 2, 3)]


OFFLINE = """\
Looking up https://lore.kernel.org/all/20241125.sev-snp.v3%40example.org
Grabbing thread from lore.kernel.org/all/20241125.sev-snp.v3%40example.org/t.mbox.gz
Traceback (most recent call last):
  File "/usr/lib/python3/dist-packages/urllib3/connection.py", line 174, in _new_conn
socket.gaierror: [Errno -3] Temporary failure in name resolution
requests.exceptions.ConnectionError: HTTPSConnectionPool(host='lore.kernel.org', port=443): Max retries exceeded
Unable to fetch thread
"""


@pytest.mark.parametrize("body, tail", [
    (f"cat >&2 <<'EOF'\n{OFFLINE}EOF\nexit 1\n", "\n".join(OFFLINE.splitlines()[-5:])),
    ("echo 'No patches found.'\nexit 0\n", "No patches found."),  # exit 0 but no series.mbx
], ids=["offline", "no-mbox"])
def test_fetch_b4_failure_names_msgid_and_shows_tail(tmp_path, fake_b4, body, tail):
    fake_b4(body)
    with pytest.raises(InfraError) as e:
        fetch_b4(MSGID, tmp_path / "w")
    assert str(e.value) == f"b4 could not fetch {MSGID} (offline, or an unknown Message-ID?):\n{tail}"


def test_fetch_b4_timeout(tmp_path, fake_b4):
    fake_b4("exec sleep 30\n")
    with pytest.raises(InfraError) as e:
        fetch_b4(MSGID, tmp_path / "w", timeout=0.2)
    assert str(e.value) == f"b4 am {MSGID}: no answer after 0.2s; is the network reachable?"


# ---- git's messages -----------------------------------------------------------------------------

@pytest.mark.parametrize("log, hunks, files", [
    ("git-am-3way-conflict.log", [], ["a.c"]),
    ("git-am-failed.log", [("a.c", 7)], []),
    ("git-apply-check-failed.log", [("a.c", 7)], []),
    ("git-apply-3way-conflict.log", [], []),  # why _patch_error asks `git apply --check` itself
    ("git-apply-check-failed-two-files.log", [("arch/x86/kvm/svm/sev.c", 7), ("virt/kvm/guest_memfd.c", 2)], []),
    ("git-am-3way-conflict-two-files.log", [], ["virt/kvm/guest_memfd.c", "arch/x86/kvm/svm/sev.c"]),
    ("git-apply-check-deleted.log", [], []),
])
def test_failed_hunks_and_conflicted_files(log, hunks, files):
    text = data(log)
    assert (failed_hunks(text), conflicted_files(text)) == (hunks, files)


def test_conflicted_files_modify_delete():
    assert conflicted_files(data("git-am-3way-modify-delete.log")) == ["arch/x86/kvm/svm/sev.c"]


TEN_HUNK = "@@ -7,7 +7,7 @@ line 6\n line 7\n line 8\n line 9\n-line 10\n+line ten\n line 11\n line 12\n line 13"
TWO_HUNKS = """\
diff --git a/a.c b/a.c
--- a/a.c
+++ b/a.c
@@ -1,2 +1,2 @@
-line 1
+line one
 line 2
@@ -9,2 +9,2 @@
 line 9
-line 10
+line ten
diff --git a/b.c b/b.c
--- a/b.c
+++ b/b.c
@@ -9,2 +9,2 @@
-int x;
+int y;
"""


@pytest.mark.parametrize("text, path, line, hunk", [
    (MBOX.read_text(), "a.c", 7, TEN_HUNK),  # stops at the "-- " signature
    (MBOX.read_text(), "a.c", 1, "@@ -1,6 +1,6 @@\n line 1\n line 2\n-line 3\n+line three\n line 4\n line 5\n line 6"),
    (MBOX.read_text(), "b.c", 0, "@@ -0,0 +1 @@\n+int x;"),
    (MBOX.read_text(), "a.c", 8, ""),
    (MBOX.read_text(), "c.c", 7, ""),
    (TWO_HUNKS, "a.c", 1, "@@ -1,2 +1,2 @@\n-line 1\n+line one\n line 2"),  # stops at the next hunk
    (TWO_HUNKS, "a.c", 9, "@@ -9,2 +9,2 @@\n line 9\n-line 10\n+line ten"),  # stops at the next file
    (TWO_HUNKS, "b.c", 9, "@@ -9,2 +9,2 @@\n-int x;\n+int y;"),
    (data("diff-u-two-files.diff").replace("\t2000-01-01 00:00:00.000000000 +0000", ""), "b.c", 0,
     "@@ -0,0 +1 @@\n+int x;"),
    pytest.param(DIFF_U_TEN.read_text(), "a.c", 7, TEN_HUNK.replace(" line 6", "")),
    pytest.param(data("diff-u-two-files.diff").replace("\t2000-01-01 00:00:00.000000000 +0000", ""), "a.c", 7,
                 TEN_HUNK.replace(" line 6", "")),
], ids=["signature", "first", "new-file", "wrong-line", "wrong-file", "next-hunk", "next-file", "last",
        "diff-u-last-file", "diff-u-timestamps", "diff-u-next-header"])
def test_find_hunk(text, path, line, hunk):
    assert find_hunk(text, path, line) == hunk


# ---- applying on a throw-away repo --------------------------------------------------------------

def test_apply_series_mail_and_bare_diff(tmp_path, repo):
    path, base = repo
    series = load_series(make_series(tmp_path / "s", {"0001-three.patch": mbox_message(1),
                                                       "0002-ten.diff": DIFF_U_TEN}))
    applied = apply_series(path, base, series)

    commits = git(path, "rev-list", "--reverse", f"{base}..HEAD").split()
    assert [(a.index, a.subject, a.commit) for a in applied] == [
        (1, "a.c: spell out three", commits[0]), (2, "0002-ten.diff", commits[1])]
    # Ids come from the commits, so a bare diff's timestamps do not change them.
    assert [a.patch_id for a in applied] == [commit_patch_id(path, a.commit) for a in applied]
    assert applied[0].patch_id == git_patch_id(mbox_message(1))  # the commit is the mailed patch
    assert git(path, "log", "--format=%s|%an|%cn|%cI", f"{base}..HEAD") == (
        "0002-ten.diff|snp-harness|snp-harness|2000-01-01T00:00:00+00:00\n"
        "a.c: spell out three|snp-harness|snp-harness|2000-01-01T00:00:00+00:00")
    a_c = (path / "a.c").read_text().splitlines()
    assert (a_c[2], a_c[9]) == ("line three", "line ten")
    assert git(path, "status", "--porcelain") == ""


def test_apply_series_is_deterministic(tmp_path, repo):
    path, base = repo
    series = load_mbox(MBOX, tmp_path / "split")
    first = apply_series(path, base, series)
    tree = git(path, "rev-parse", "HEAD^{tree}")
    again = apply_series(path, base, series)
    assert again == first
    assert git(path, "rev-parse", "HEAD^{tree}") == tree
    other = tmp_path / "other"
    assert apply_series(other, make_repo(other), series) == first  # a fresh clone-alike: same commits
    assert git(other, "rev-parse", "HEAD^{tree}") == tree


def expected_conflict(subject: str, name: str, hunk: str, base: str) -> str:
    return (f'patch 2/2 "{subject}" ({name}) does not apply: a.c: hunk at line 7\n'
            f"failing hunk:\n{hunk}\n"
            f"the tree was reset to {base[:12]}")


def test_apply_series_conflict(tmp_path, repo):
    path, base = repo
    series = load_series(make_series(tmp_path / "s", {"0001-ten.patch": mbox_message(2),
                                                       "0002-shout-ten.patch": SHOUT_TEN}))
    with pytest.raises(PatchError) as e:
        apply_series(path, base, series)
    assert str(e.value) == expected_conflict("a.c: shout ten", "0002-shout-ten.patch",
                                             TEN_HUNK.replace("line ten", "line TEN"), base)
    assert_clean_at(path, base)


def test_apply_series_conflict_bare_diff(tmp_path, repo):
    path, base = repo
    series = load_series(make_series(tmp_path / "s", {"0001-shout-ten.patch": SHOUT_TEN, "0002-ten.diff": DIFF_U_TEN}))
    with pytest.raises(PatchError) as e:
        apply_series(path, base, series)
    assert_clean_at(path, base)
    assert str(e.value) == expected_conflict("0002-ten.diff", "0002-ten.diff", TEN_HUNK.replace(" line 6", ""), base)


def test_apply_series_modify_after_delete_names_the_file(tmp_path, repo):
    path, base = repo
    git(path, "rm", "-q", "a.c")
    git(path, "commit", "-q", "-m", "a.c: remove")
    remove = git(path, "format-patch", "--stdout", "-1").encode() + b"\n"
    git(path, "reset", "-q", "--hard", base)
    series = load_series(make_series(tmp_path / "s", {"0001-remove.patch": remove,
                                                       "0002-three.patch": mbox_message(1)}))
    with pytest.raises(PatchError) as e:
        apply_series(path, base, series)
    assert_clean_at(path, base)
    assert str(e.value).splitlines()[0] == 'patch 2/2 "a.c: spell out three" (0002-three.patch) does not apply: a.c'


def test_reset_worktree_keeps_build_dirs_only(repo):
    path, base = repo
    (path / "a.c").write_text("changed\n")
    git(path, "commit", "-q", "-am", "moved on")
    (path / "a.c").write_text("dirty\n")
    (path / ".git" / "info" / "exclude").write_text("*.o\n")
    for name in (".snp-build-x/keep", "junk.txt", "sub/untracked.c", "ignored.o", "sub/.snp-build-y/keep"):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("x\n")

    reset_worktree(path, base)

    assert_clean_at(path, base)
    assert (path / ".snp-build-x" / "keep").read_text() == "x\n"
    assert not any((path / n).exists() for n in ("junk.txt", "sub", "ignored.o"))  # -x: ignored files go too
    assert (path / "a.c").read_text().startswith("line 1\n")


def test_reset_worktree_aborts_a_stuck_am(tmp_path, repo):
    path, base = repo
    ten = tmp_path / "0001-ten.patch"
    ten.write_bytes(mbox_message(2))
    git(path, "am", str(SHOUT_TEN))
    r = subprocess.run(["git", "-C", str(path), "am", "-3", str(ten)], capture_output=True,
                       env={**os.environ, **GIT_IDENTITY})
    assert r.returncode != 0 and (path / ".git" / "rebase-apply").exists()  # stuck, with conflict markers
    reset_worktree(path, base)
    assert_clean_at(path, base)


def test_patch_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside any repository
    message = tmp_path / "0001.patch"
    message.write_bytes(mbox_message(1))
    assert patch_id(message.read_bytes(), str(message)) == git_patch_id(mbox_message(1))
    assert patch_id(DIFF_U_TEN.read_bytes(), "ten") == git_patch_id(DIFF_U_TEN.read_bytes())
    not_a_patch = tmp_path / "notes.txt"
    not_a_patch.write_text("just words\n")
    with pytest.raises(ConfigError) as e:
        patch_id(not_a_patch.read_bytes(), str(not_a_patch))
    assert str(e.value) == f"{not_a_patch}: git patch-id found no diff in it (is it a patch?)"


def test_mail_patch_fast_path_commits_what_git_am_commits(tmp_path, repo):
    """The fast path (git apply --index + commit-tree) records the author, date and message
    exactly as `git am --keep-non-patch` does, so the series' commits read the same."""
    path, base = repo
    mail = (b"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            b"From: Ada Lovelace <ada@example.org>\nDate: Tue, 3 Mar 2026 10:11:12 +0100\n"
            b"Subject: [PATCH v2 1/1] [RFC] a.c: spell out three\n\nWhy, in two lines\nof body.\n\n"
            b"Signed-off-by: Ada Lovelace <ada@example.org>\n---\n" + mbox_message(1).split(b"\n---\n", 1)[1])
    series = load_series(make_series(tmp_path / "s", {"0001-three.patch": mail}))
    apply_series(path, base, series)
    fmt = "--format=%an|%ae|%aI|%B"
    fast = git(path, "log", "-1", fmt)
    git(path, "checkout", "-q", "-f", "--detach", base)
    git(path, "am", "-q", "--keep-non-patch", str(series.patches[0].path))
    assert fast == git(path, "log", "-1", fmt)
    assert fast.startswith("Ada Lovelace|ada@example.org|2026-03-03T10:11:12+01:00|[RFC] a.c: spell out three")
