"""The kernel's command-line syntax: splitting /proc/cmdline, quoting new words, and grub's view.

The kernel's parser (next_arg() in lib/cmdline.c) knows double quotes only: a quote
may open anywhere in a word (param="a b" or "param=a b"), it has no escapes, and a
quote that is never closed runs to the end of the line. A value that holds a double
quote can therefore not be written at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import ConfigError

# isspace() of the kernel's ctype for ASCII.
_SPACE = " \t\n\v\f\r"
# Words of the running command line that describe the old boot, not the host.
DROP_PARAMS = ("BOOT_IMAGE", "initrd")


@dataclass(frozen=True)
class KernelArg:
    raw: str  # as written on the command line
    param: str  # what next_arg() hands the kernel
    value: str | None

    @property
    def is_separator(self) -> bool:
        """`--`: what follows goes to init, not to the kernel."""
        return self.param == "--" and self.value is None

    @property
    def text(self) -> str:
        """The word as the kernel sees it, quotes removed."""
        return self.param if self.value is None else f"{self.param}={self.value}"


def split_kernel_cmdline(text: str) -> list[KernelArg]:
    """The words of a command line exactly as next_arg() splits them; /proc/cmdline's newline is dropped.

    Never raises: any string is some command line to the kernel.
    """
    text = text.removesuffix("\n")
    out: list[KernelArg] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SPACE:
            i += 1
        if i >= n:
            return out
        start = i
        quoted = text[i] == '"'
        i += quoted
        body, in_quote, equals = i, quoted, 0
        while i < n and (in_quote or text[i] not in _SPACE):
            if equals == 0 and text[i] == "=":
                equals = i - body  # an "=" as the first character counts as none, as in C
            if text[i] == '"':
                in_quote = not in_quote
            i += 1
        out.append(_parse_word(text[start:i], text[body:i], quoted, equals))


def _parse_word(raw: str, arg: str, quoted: bool, equals: int) -> KernelArg:
    """next_arg()'s quote stripping, on one word (arg: the word without a leading quote)."""
    buf, end = list(arg), len(arg)
    value_start = None
    if equals:
        buf[equals] = "\0"
        value_start = equals + 1
        if value_start < end and buf[value_start] == '"':
            value_start += 1
            if buf[end - 1] == '"':
                buf[end - 1] = "\0"
    if quoted and end > 0 and buf[end - 1] == '"':
        buf[end - 1] = "\0"
    s = "".join(buf)
    value = None if value_start is None else s[value_start:].split("\0")[0]
    return KernelArg(raw, s.split("\0")[0], value)


def kernel_word(param: str, value: str | None) -> KernelArg:
    """One word the kernel reads back as (param, value): param="value with spaces" when needed."""
    text = param if value is None else f"{param}={value}"
    if '"' in text:
        raise ConfigError(f"kernel command line: {text!r} holds a double quote, which the kernel's "
                          "parser cannot take inside a word (it has no escapes)")
    if value is not None and not any(c in _SPACE for c in param) and param:
        raw = f'{param}="{value}"' if any(c in _SPACE for c in value) else text
    else:
        raw = f'"{text}"' if any(c in _SPACE for c in text) or not text else text
    words = split_kernel_cmdline(raw)
    if len(words) != 1 or (words[0].param, words[0].value) != (param, value):
        raise ConfigError(f"kernel command line: {text!r} cannot be written as one kernel parameter")
    return words[0]


def extra_arg(word: str) -> KernelArg:
    """A parameter the user adds: kept as written when it is already one kernel word with its
    quotes closed (dyndbg="file sev.c +p"), else read as param=value and quoted here
    (dyndbg=file sev.c +p)."""
    words = split_kernel_cmdline(word)
    if len(words) == 1 and words[0].raw == word and word.count('"') % 2 == 0:
        return words[0]
    param, eq, value = word.partition("=")
    if eq and not param:  # the kernel takes only a later "=" as the separator
        param, eq, value = word, "", ""
    return kernel_word(param, value if eq else None)


def next_cmdline_args(current: str, extra: tuple[str, ...] | list[str]) -> list[KernelArg]:
    """The running command line without its boot-specific words, with `extra` added for the kernel
    (before any `--`, after which words go to init)."""
    words = [w for w in split_kernel_cmdline(current) if w.param not in DROP_PARAMS]
    if words and words[-1].raw.count('"') % 2:
        # An unclosed quote runs to the end of the line: close it, or nothing can follow it.
        words[-1] = kernel_word(words[-1].param, words[-1].value)
    cut = next((i for i, w in enumerate(words) if w.is_separator), len(words))
    return [*words[:cut], *map(extra_arg, extra), *words[cut:]]


def next_cmdline(current: str, extra: tuple[str, ...] | list[str] = ()) -> str:
    """The command line for the next kernel (kexec --command-line=), in the kernel's own syntax."""
    return " ".join(w.raw for w in next_cmdline_args(current, extra))


def grub_linux_args(args: list[KernelArg]) -> str:
    """The words after `linux PATH` in a grub.cfg menu entry that give the kernel `args`.

    grub removes its own quotes, then writes each argument back, in double quotes if it
    holds a space; some versions escape \\ ' and " with a backslash, which the kernel keeps.
    So each word goes in grub's single quotes, and a word with those characters is refused.
    """
    out = []
    for a in args:
        text = a.text
        bad = sorted({c for c in text if c in "\\'\"" or (c in _SPACE and c != " ") or ord(c) < 0x20})
        if bad:
            raise ConfigError(f"kernel command line: {text!r} holds {''.join(bad)!r}, which grub would "
                              "pass to the kernel changed; use boot_method = \"kexec\" for this host")
        out.append(f"'{text}'")
    return " ".join(out)
