# -*- test-case-name: estwisted.node.test.test_config -*-
"""
The four sources of a configuration and the table that merges them:
the YAML file (L{read_config_file}, L{parse_config_text}), the
C{EVENTSTORE_*} environment and the command line, over the defaults
declared with L{estwisted.node.options.option}.  Precedence, lowest
first: default < YAML file < environment < command line
(L{OptionTable.merge}); L{OptionTable.render} prints the result with
each value's source (C{--what-if}).

Pure: reads the configuration file and nothing else.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional, Protocol, TypeVar

import attrs
import yaml

from estwisted.core.errors import ConfigError
from estwisted.node.options import (
    BOOL_WORDS,
    DEFAULT_SOURCE,
    ENV_PREFIX,
    OPTION_KEY,
    Option,
    Source,
    SourceKind,
)

__all__ = [
    "Configured",
    "Loader",
    "OptionTable",
    "parse_config_text",
    "read_config_file",
]


class Configured(Protocol):
    """
    What L{OptionTable} reads of a configuration built from it.
    """

    @property
    def sources(self) -> Mapping[str, Source]: ...

    @property
    def ignored_environment(self) -> tuple[str, ...]: ...


# --- YAML file ------------------------------------------------------------------------


def read_config_file(path: str, source: Source) -> str:
    """
    Read the configuration file as text.

    @raise ConfigError: it cannot be read.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(
            f"Config ({source}): cannot read configuration file {path!r}: {reason}"
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"Config ({source}): configuration file {path!r} is not UTF-8 text: {e.reason}"
        ) from None


def parse_config_text(text: str, path: str) -> dict[str, tuple[object, int]]:
    """
    Parse YAML text into C{{key as written: (value, line number)}}.

    @raise ConfigError: YAML syntax error (with line number), a document that
        is not a mapping, or a key given twice.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = f", line {mark.line + 1}" if mark is not None else ""
            problem = e.problem or e.context or "syntax error"
            if e.context and e.context_mark is not None and e.problem:
                problem += f" ({e.context} started on line {e.context_mark.line + 1})"
            raise ConfigError(
                f"configuration file {path}{line}: YAML syntax error: {problem}"
            ) from None
        except yaml.YAMLError as e:
            raise ConfigError(f"configuration file {path}: YAML error: {e}") from None
        if node is None:
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(
                f"configuration file {path}, line {node.start_mark.line + 1}: expected a "
                "mapping of option names to values (e.g. IntIp: 127.0.0.1)"
            )
        result: dict[str, tuple[object, int]] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            try:
                key = loader.construct_object(key_node, deep=True)
                value = loader.construct_object(value_node, deep=True)
            except yaml.YAMLError as e:
                raise ConfigError(f"configuration file {path}, line {line}: {e}") from None
            if not isinstance(key, str):
                raise ConfigError(
                    f"configuration file {path}, line {line}: key {key!r} is not an option name"
                )
            if key in result:
                raise ConfigError(
                    f"{key} (file {path}, line {line}): given twice "
                    f"(first on line {result[key][1]})"
                )
            result[key] = (value, line)
        return result
    finally:
        loader.dispose()


def _key(text: str) -> str:
    """
    The lookup key of a spelled option name: case and dashes/underscores
    ignored.
    """
    return text.replace("-", "").replace("_", "").lower()


def _suggest(word: str, candidates: Iterable[str], key: Callable[[str], str] = _key) -> str:
    """
    " (did you mean X?)" for the nearest candidate, or "".
    """
    by_key = {key(c): c for c in candidates}
    match = difflib.get_close_matches(key(word), list(by_key), n=1, cutoff=0.6)
    if match:
        return f" (did you mean {by_key[match[0]]}?)"
    return ""


_NEGATIVE_NUMBER = re.compile(r"^-\d")
_PASS_THROUGH = {"help": "--help", "h": "--help", "?": "--help", "version": "--version"}


_Config = TypeVar("_Config")
_Loaded = TypeVar("_Loaded", covariant=True)


class Loader(Protocol[_Loaded]):
    """
    A configuration loader made by L{OptionTable.loader}: merge the four
    sources (default < C{read_file(path)} of C{--config} < C{environ} <
    C{command_line}) and validate.
    """

    def __call__(
        self,
        command_line: Optional[Mapping[str, str]] = None,
        environ: Optional[Mapping[str, str]] = None,
        read_file: Callable[[str, Source], str] = ...,
    ) -> _Loaded:
        """
        See L{OptionTable.merge} for the parameters.

        @raise ConfigError: one line naming the option and its source.
        """


def _fail(opt: Option, source: Source, problem: str) -> ConfigError:
    return ConfigError(f"{opt.name} ({source}): {problem}")


class OptionTable:
    """
    One declarative option table and everything that reads it: lookups by
    name, spelling and C{EVENTSTORE_*} variable, the command-line
    canonicalisation, the merge of the four sources (default < file <
    environment < command line) and the C{--what-if} rendering.  A node
    (L{NodeConfig}) and a manager (L{estwisted.manager.config}) each
    declare their table with L{option}; the rules are these, once.

    @param what: the word in "not a known ..." for an unknown file key.
    @param key_aliases: other spellings of an option (spelling -> name).
    @param env_aliases: other variables of an option (variable -> name),
        besides each option's own C{env_aliases}.
    """

    def __init__(
        self,
        options: Sequence[Option],
        what: str = "option",
        key_aliases: Optional[Mapping[str, str]] = None,
        env_aliases: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.options = tuple(options)
        self.what = what
        self.by_name = {opt.name: opt for opt in self.options}
        self.by_key = {_key(opt.name): opt for opt in self.options}
        self.by_env = {opt.env: opt for opt in self.options}
        for opt in self.options:
            for alias in opt.env_aliases:
                self.by_env[alias] = opt
        for spelling, name in (key_aliases or {}).items():
            self.by_key[_key(spelling)] = self.by_name[name]
        for var, name in (env_aliases or {}).items():
            self.by_env[var] = self.by_name[name]

    @classmethod
    def of(cls, config_class: type, **kwargs: Any) -> OptionTable:
        """
        The table of the options declared (with L{option}) on an attrs
        configuration class, in declaration order.
        """
        table = []
        for f in attrs.fields(config_class):
            spec = f.metadata.get(OPTION_KEY)
            if spec is not None:
                table.append(Option(attribute=f.name, **spec))
        return cls(table, **kwargs)

    def lookup(self, name: str) -> Option:
        """
        @raise KeyError: no option is spelled C{name}.
        """
        opt = self.by_key.get(_key(name))
        if opt is None:
            raise KeyError(name)
        return opt

    def canonical_arguments(self, args: Sequence[str]) -> list[str]:
        """
        Rewrite command-line arguments into canonical C{--flag=value} form.

        Accepts C{--int-ip value}, C{--int-ip=value}, C{--IntIp value},
        C{-IntIp value}; bare booleans (C{--mem-db}), booleans followed by
        a true/false word, C{--mem-db-}/C{--mem-db+}.  List options given
        more than once accumulate.  C{--help} and C{--version} pass
        through.

        @raise ConfigError: an unknown flag (with the nearest known one
            suggested), a missing value, or a stray argument.
        """
        values: dict[str, str] = {}
        order: list[str] = []
        passed: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if not arg.startswith("-") or arg in ("-", "--"):
                raise ConfigError(
                    f"unexpected argument {arg!r} on the command line "
                    "(options look like --int-ip 127.0.0.1)"
                )
            spelled, has_value, value = arg.lstrip("-").partition("=")
            if spelled.lower() in _PASS_THROUGH and not has_value:
                passed.append(_PASS_THROUGH[spelled.lower()])
                continue
            opt = None
            if spelled[-1:] in ("+", "-") and not has_value:
                opt = self.by_key.get(_key(spelled[:-1]))
                if opt is not None and opt.kind.is_bool:
                    has_value, value = "=", "true" if spelled.endswith("+") else "false"
                else:
                    opt = None
            if opt is None:
                opt = self.by_key.get(_key(spelled))
            if opt is None:
                suggestion = _suggest(spelled, ["--" + o.flag for o in self.options])
                raise ConfigError(
                    f"unknown option {arg.split('=')[0]} on the command line{suggestion}"
                )
            if not has_value:
                if opt.kind.is_bool:
                    if i < len(args) and args[i].lower() in BOOL_WORDS - {"+", "-"}:
                        value = args[i]
                        i += 1
                    else:
                        value = "true"
                elif i < len(args) and (
                    not args[i].startswith("-") or _NEGATIVE_NUMBER.match(args[i])
                ):
                    value = args[i]
                    i += 1
                else:
                    raise ConfigError(f"{opt.name} (command line --{opt.flag}): missing value")
            if opt.name in values and opt.kind.is_list:
                values[opt.name] = values[opt.name] + "," + value
            else:
                if opt.name not in values:
                    order.append(opt.name)
                values[opt.name] = value
        return passed + [f"--{self.by_name[name].flag}={values[name]}" for name in order]

    def merge(
        self,
        command_line: Optional[Mapping[str, str]] = None,
        environ: Optional[Mapping[str, str]] = None,
        read_file: Callable[[str, Source], str] = read_config_file,
    ) -> tuple[dict[str, Any], dict[str, Source], tuple[str, ...]]:
        """
        Merge the four sources.

        @param command_line: option name (PascalCase) -> raw text, as
            produced from L{canonical_arguments} output.
        @param environ: the environment (only C{EVENTSTORE_*} names are
            looked at); by default none.
        @param read_file: reads the C{Config} file; injectable for tests.
        @return: the values by attribute, the source of each option set,
            and the C{EVENTSTORE_*} variables that name no option.

        @raise ConfigError: one line naming the option and its source.
        """
        command_line = command_line or {}
        environ = environ or {}
        chosen: dict[str, tuple[Any, Source]] = {}

        def take(opt: Option, value: Any, source: Source) -> None:
            current = chosen.get(opt.name)
            if current is None or current[1].kind <= source.kind:
                chosen[opt.name] = (value, source)

        for name, text in command_line.items():
            opt = self.lookup(name)
            source = Source(SourceKind.COMMAND_LINE, f"--{opt.flag}")
            try:
                take(opt, opt.convert_text(text), source)
            except ValueError as e:
                raise _fail(opt, source, str(e)) from None

        ignored: list[str] = []
        for var in sorted(environ):
            if not var.startswith(ENV_PREFIX):
                continue
            env_opt = self.by_env.get(var)
            if env_opt is None:
                ignored.append(var)
                continue
            source = Source(SourceKind.ENVIRONMENT, var)
            try:
                take(env_opt, env_opt.convert_text(environ[var]), source)
            except ValueError as e:
                raise _fail(env_opt, source, str(e)) from None

        config_entry = chosen.get("Config")
        if config_entry is not None and config_entry[0]:
            path, path_source = config_entry
            text = read_file(path, path_source)
            for key, (raw, line) in parse_config_text(text, path).items():
                source = Source(SourceKind.FILE, f"{path}, line {line}")
                file_opt = self.by_key.get(_key(key))
                if file_opt is None:
                    names = [o.name for o in self.options if o.file_allowed]
                    raise ConfigError(
                        f"{key} (file {path}, line {line}): not a known {self.what}"
                        f"{_suggest(key, names)}"
                    )
                if not file_opt.file_allowed:
                    raise _fail(file_opt, source, "cannot be set in a configuration file")
                try:
                    take(file_opt, file_opt.convert_yaml(raw), source)
                except ValueError as e:
                    raise _fail(file_opt, source, str(e)) from None

        values = {self.by_name[name].attribute: value for name, (value, _) in chosen.items()}
        sources = {name: source for name, (_, source) in chosen.items()}
        return values, sources, tuple(ignored)

    def load(
        self,
        make: Callable[..., _Config],
        check: Callable[[_Config], None],
        command_line: Optional[Mapping[str, str]] = None,
        environ: Optional[Mapping[str, str]] = None,
        read_file: Callable[[str, Source], str] = read_config_file,
    ) -> _Config:
        """
        L{merge}, build the configuration with C{make(**values, sources=...,
        ignored_environment=...)} and validate it with C{check}.

        @raise ConfigError: one line naming the option and its source.
        """
        values, sources, ignored = self.merge(command_line, environ, read_file)
        config = make(**values, sources=sources, ignored_environment=ignored)
        check(config)
        return config

    def loader(
        self, make: Callable[..., _Config], check: Callable[[_Config], None]
    ) -> Loader[_Config]:
        """
        The loading function of a configuration class: L{load} with C{make}
        and C{check} bound.

        @param make: the configuration class (or a factory of it).
        @param check: the rules that involve more than one option.
        """

        def load(
            command_line: Optional[Mapping[str, str]] = None,
            environ: Optional[Mapping[str, str]] = None,
            read_file: Callable[[str, Source], str] = read_config_file,
        ) -> _Config:
            return self.load(make, check, command_line, environ, read_file)

        return load

    def source_of(self, config: Configured, name: str) -> Source:
        """
        Where the effective value of option C{name} (PascalCase or
        snake_case) of C{config} came from.

        @raise KeyError: no option is spelled C{name}.
        """
        return config.sources.get(self.lookup(name).name, DEFAULT_SOURCE)

    def not_implemented_in_use(self, config: Configured) -> list[str]:
        """
        Names of the options of C{config} that were set (not default) but
        have no effect yet.
        """
        return [
            opt.name
            for opt in self.options
            if not opt.implemented
            and self.source_of(config, opt.name).kind != SourceKind.DEFAULT
        ]

    def where(self, config: Configured, name: str) -> str:
        """
        C{"Name (source)"}: how an error message names an option.
        """
        return f"{name} ({self.source_of(config, name)})"

    def suggest_variable(self, var: str) -> str:
        """
        " (did you mean EVENTSTORE_X?)" for a variable that names no option.
        """
        return _suggest(var, list(self.by_env), key=str.upper)

    def render(self, config: Configured) -> str:
        """
        The effective configuration, Event Store v5 style: C{MODIFIED
        OPTIONS} then C{DEFAULT OPTIONS}, one C{NAME: value (source)} line
        each (C{--what-if}).
        """
        modified, defaults = [], []
        width = max(len(opt.title) for opt in self.options) + 2
        for opt in self.options:
            source = self.source_of(config, opt.name)
            value = opt.show(getattr(config, opt.attribute))
            line = f"    {(opt.title + ':').ljust(width)}{value} ({source})"
            if source.kind == SourceKind.DEFAULT:
                defaults.append(line)
            else:
                if not opt.implemented:
                    line += " " + opt.marker
                modified.append(line)
        out = ["MODIFIED OPTIONS:", ""]
        out += modified or ["    (none)"]
        out += ["", "DEFAULT OPTIONS:", ""]
        out += defaults or ["    (none)"]
        if config.ignored_environment:
            out += ["", "IGNORED ENVIRONMENT VARIABLES (not options):", ""]
            for var in config.ignored_environment:
                out.append(f"    {var}{self.suggest_variable(var)}")
        return "\n".join(out) + "\n"


