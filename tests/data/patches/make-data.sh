#!/bin/sh
# How the files in this directory were made (git 2.39.5, GNU diff 3.8):
#   sh tests/data/patches/make-data.sh tests/data/patches
# A throw-away repo: base = a.c with "line 1".."line 20"; three commits on top
# (format-patch-3.mbox; patch 2 has a subject git folds, patch 3 one it RFC 2047
# encodes); a commit that conflicts with patch 2 (format-patch-shout-ten.patch);
# what git printed applying patch 2 on that conflicting tree (*.log); and bare
# `diff -u` patches made with GNU diff from two plain directories (*.diff).
# Fixed identity and dates, so commit ids (and the files) are reproducible;
# a different git version changes the "-- " signature and maybe hint texts.
set -e
out=$(cd "$1" && pwd); w=$(mktemp -d); cd "$w"
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=snp-harness GIT_AUTHOR_EMAIL=snp-harness@localhost GIT_COMMITTER_NAME=snp-harness GIT_COMMITTER_EMAIL=snp-harness@localhost
export GIT_AUTHOR_DATE=2000-01-01T00:00:00Z GIT_COMMITTER_DATE=2000-01-01T00:00:00Z
git init -q -b main r; cd r
seq 1 20 | sed 's/^/line /' > a.c; git add a.c; git commit -qm base
sed -i 's/^line 3$/line three/' a.c; git commit -qam "a.c: spell out three"
sed -i 's/^line 10$/line ten/' a.c; git commit -qam "KVM: SEV: spell out ten in a.c, with a subject long enough that git folds it"
echo "int x;" > b.c; git add b.c; git commit -qm "b.c: add x, as Jörg suggested"
git format-patch --stdout main~3 > "$out/format-patch-3.mbox"
# a patch that conflicts with patch 2 (both rewrite line 10)
git checkout -q --detach main~3
sed -i 's/^line 10$/line TEN/' a.c; git commit -qam "a.c: shout ten"
git format-patch --stdout -1 > "$out/format-patch-shout-ten.patch"
# captures: patch 2 (ten) on a tree where line 10 is TEN
git format-patch --stdout -1 main~1 > ../ten.patch
git am -3 --keep-non-patch ../ten.patch > "$out/git-am-3way-conflict.log" 2>&1 || true
git am --abort; git reset -q --hard
git apply --check -v ../ten.patch > "$out/git-apply-check-failed.log" 2>&1 || true
git am ../ten.patch > "$out/git-am-failed.log" 2>&1 || true
git am --abort; git reset -q --hard
git apply --3way --index ../ten.patch > "$out/git-apply-3way-conflict.log" 2>&1 || true
git reset -q --hard
# bare `diff -u` patches (no mail headers, no index lines), from two plain directories
cd "$w"; mkdir -p u/a u/b
seq 1 20 | sed 's/^/line /;s/^line 3$/line three/' > u/a/a.c
sed 's/^line 10$/line ten/' u/a/a.c > u/b/a.c
echo "int x;" > u/b/b.c
touch -d @946684800 u/a/a.c u/b/a.c u/b/b.c
cd u
diff -ur a b > "$out/diff-ur-ten.diff" || true
{ diff -u a/a.c b/a.c; diff -uN a/b.c b/b.c; } > "$out/diff-u-two-files.diff" || true
# two files failing at once (kernel-like paths), and a patch to a file an earlier commit deleted
cd "$w"; git init -q -b main m; cd m
mkdir -p arch/x86/kvm/svm virt/kvm
seq 1 20 | sed 's/^/line /' > arch/x86/kvm/svm/sev.c
seq 1 20 | sed 's/^/gmem /' > virt/kvm/guest_memfd.c
git add .; git commit -qm base
sed -i 's/^line 10$/line ten/' arch/x86/kvm/svm/sev.c; sed -i 's/^gmem 5$/gmem five/' virt/kvm/guest_memfd.c
git commit -qam "KVM: touch both"; git format-patch --stdout -1 > ../both.patch
git checkout -q --detach main~1
sed -i 's/^line 10$/line TEN/' arch/x86/kvm/svm/sev.c; sed -i 's/^gmem 5$/gmem FIVE/' virt/kvm/guest_memfd.c
git commit -qam other
git apply --check -v ../both.patch > "$out/git-apply-check-failed-two-files.log" 2>&1 || true
git am -3 ../both.patch > "$out/git-am-3way-conflict-two-files.log" 2>&1 || true
git am --abort
git checkout -q --detach main~1; git rm -q arch/x86/kvm/svm/sev.c; git commit -qm "delete sev.c"
git am -3 ../both.patch > "$out/git-am-3way-modify-delete.log" 2>&1 || true
git am --abort; git reset -q --hard
git apply --check -v ../both.patch > "$out/git-apply-check-deleted.log" 2>&1 || true
rm -rf "$w"
