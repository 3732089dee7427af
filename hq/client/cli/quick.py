"""A quick parse of the common command lines without docopt (whose import and parse cost a
command about 30 ms): the very dict docopt gives, or None to let docopt decide (and refuse).

The options come from the usage text's Options section, as docopt reads them. Anything
unusual (an unknown or abbreviated option, `--`, `-h`, a form left to docopt) gives None.
"""


def option_table(doc):
    """({name: (key, takes_argument)}, {key: default}) from the Options section of `doc`."""
    names, defaults = {}, {}
    section = doc.partition("\nOptions:")[2]
    for line in section.splitlines():
        text = line.strip()
        if not text.startswith("-"):
            continue
        spec, _, description = text.partition("  ")
        words = spec.replace(",", " ").replace("=", " =").split()
        flags = [w for w in words if w.startswith("-")]
        takes = len(words) > len(flags)
        key = next((f for f in flags if f.startswith("--")), flags[0])
        for flag in flags:
            names[flag] = (key, takes)
        default = description.partition("[default: ")[2].partition("]")[0] if takes else ""
        defaults[key] = (default or None) if takes else False
    return names, defaults


class _Table:
    cache = {}

    @classmethod
    def of(cls, doc):
        if doc not in cls.cache:
            cls.cache[doc] = option_table(doc)
        return cls.cache[doc]


def take_option(names, args, seen, argv, i):
    """Read the option at argv[i] into args; the index after it, or None if unusual."""
    word = argv[i]
    if word.startswith("--"):
        flag, eq, value = word.partition("=")
        if flag not in names:
            return None
        key, takes = names[flag]
        if not takes:
            return None if eq else _set(args, seen, key, True, i + 1)
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                return None
            value, i = argv[i + 1], i + 1
        return _set(args, seen, key, value, i + 1)
    for at in range(1, len(word)):          # -wq, -c4, -c 4
        if "-" + word[at] not in names:
            return None
        key, takes = names["-" + word[at]]
        if not takes:
            if _set(args, seen, key, True, 0) is None:
                return None
            continue
        value = word[at + 1:]
        if not value:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                return None
            value, i = argv[i + 1], i + 1
        return _set(args, seen, key, value, i + 1)
    return i + 1


def _set(args, seen, key, value, after):
    if key in seen:                 # given twice: docopt's business
        return None
    seen.add(key)
    args[key] = value
    return after


def parse(doc, argv, extra, commands=None, positional=None, options_first=False):
    """docopt's dict for argv, or None. `extra`: the keys docopt adds from the usage lines
    with their defaults; `commands`: {word: (option keys it takes, check(args))}, the first
    word of argv must be one; `positional`: the key that collects the other words (a list).
    With `options_first`, the first other word ends the options (`--` included, as docopt)."""
    names, defaults = _Table.of(doc)
    args = dict(defaults, **{k: (list(v) if isinstance(v, list) else v)
                             for k, v in extra.items()})
    allowed, check, i, seen = None, None, 0, set()
    if commands is not None:
        if not argv or argv[0] not in commands:
            return None
        (allowed, check), i = commands[argv[0]], 1
        args[argv[0]] = True
    while i < len(argv):
        word = argv[i]
        if options_first and positional and (word == "--" or not word.startswith("-")):
            args[positional] += argv[i:]
            break
        if word.startswith("-") and word not in ("-", "--"):
            i = take_option(names, args, seen, argv, i)
            if i is None:
                return None
            continue
        if word in ("-", "--") or positional is None:
            return None
        args[positional].append(word)
        i += 1
    if allowed is not None and any(args[k] != defaults[k] for k in defaults
                                   if k not in allowed):
        return None
    return args if check is None or check(args) else None
