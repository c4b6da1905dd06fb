"""The README's commands stay runnable: every shell command in its ```bash blocks is checked without running
the expensive part, and every ```python block compiles and its imports (`r2gen_hf`'s and the others) resolve.

How a command is checked (`check_command`); a form not listed here fails, so a new command cannot slip in
unchecked:

* `python finetune.py <recipe> [flags]`: `finetune.parse_arguments` accepts them (the recipe's keys included),
  pretending a bf16-capable GPU so that GPU recipes parse on a CPU machine (the Trainer's other argument
  checks still run).
* `accelerate launch [options] finetune.py ...`: accelerate's own launch parser accepts the options, the
  `--config_file` exists, and the finetune.py arguments parse as above.
* `python generate.py ...`: `HfArgumentParser(GenerateArguments)` parses them, and `select_studies` accepts the
  input combination (exactly one input; its readers are stubbed out).
* `python -m data_prep.<name> ...`, `python -m r2gen_hf.hub ...`, `python -m r2gen_hf.demo ...`,
  `python bench/<script>.py ...`, `python -m bench ...` (skipped while `bench/__main__.py` does not exist):
  the module's `main` runs until its `argparse` parser has parsed the arguments, and stops there.
* `make [VAR=value ...] [target ...]`: the targets are Makefile targets and the variables Makefile variables;
  `DEMO_ARGS` must also parse as finetune.py flags after `configs/demo.yaml`.
* `pip install -e ".[extras]"`: the extras exist in setup.cfg. `hf auth login`, `hf download <repo id>`,
  `export NAME=value`, `wget ... <url>` (hosts: OpenI, PhysioNet) and `unzip <file> -d <folder>`: their form.

On top of that, every flag (`--name`) must be spelled exactly as the parser defines it (argparse would accept
an abbreviation), and every argument that looks like a path (it contains "/" or ends in a file extension)
must be one of:

* a file or folder of this repository (`configs/demo.yaml`, `finetune.py`, `bench/data_loading.py`, ...);
* a user path: relative, under one of `USER_ROOTS` — `downloads/` (raw datasets as downloaded), `data/`
  (prepared datasets), `runs/` (training outputs), `outputs/` (demo, predictions), `studies/` (the user's own
  images), `offload/` (disk offload) — which the README uses for everything the user creates;
* a Hub repo id `namespace/name` with a namespace in `HUB_NAMESPACES`, or an https URL.
"""

import argparse
import ast
import configparser
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import sys
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # finetune.py and generate.py are scripts at the repository root
    sys.path.insert(0, str(ROOT))
README = ROOT / "README.md"
USER_ROOTS = ("downloads", "data", "runs", "outputs", "studies", "offload")
HUB_NAMESPACES = ("you", "google", "microsoft")
URL_HOSTS = ("openi.nlm.nih.gov", "physionet.org")
PATH_SUFFIXES = (".yaml", ".yml", ".json", ".jsonl", ".py", ".png", ".jpg", ".jpeg", ".csv", ".tgz", ".gz", ".zip", ".txt", ".md")
SHELL_OPERATORS = ("&&", "||", "|", ";", ">", ">>", "<", "&")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


class CommandError(AssertionError):
    """A README command that would not run as written."""


# ------------------------------------------------------------------------------------------ the README


def fenced_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """(first line number, body) of every ```<language> block."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        if lines[index].strip() == f"```{language}":
            start, body = index + 2, []
            index += 1
            while index < len(lines) and lines[index].strip() != "```":
                body.append(lines[index])
                index += 1
            if index == len(lines):
                raise CommandError(f"README.md:{start - 1}: unclosed ```{language} block")
            blocks.append((start, "\n".join(body)))
        index += 1
    return blocks


def commands_in(block: str, first_line: int) -> list[tuple[int, str]]:
    """One command per logical line (backslash continuations joined), comments and blank lines dropped."""
    commands, pending, start = [], "", first_line
    for number, line in enumerate(block.splitlines(), first_line):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text and shlex.split(text, comments=True):
            commands.append((start, text))
    if pending:
        raise CommandError(f"README.md:{start}: a line continuation at the end of a block")
    return commands


def readme_commands() -> list[tuple[int, str]]:
    return [command for start, block in fenced_blocks(README.read_text(), "bash") for command in commands_in(block, start)]


# ---------------------------------------------------------------------------------- generic argument checks


def is_path_like(token: str) -> bool:
    return "/" in token or token.lower().endswith(PATH_SUFFIXES)


def check_path(token: str) -> None:
    if token.startswith("https://"):
        host = token.split("/")[2]
        if not any(host == allowed or host.endswith("." + allowed) for allowed in URL_HOSTS):
            raise CommandError(f"{token}: a URL outside {URL_HOSTS}")
        return
    if (ROOT / token).exists() and not token.startswith("/"):
        return
    parts = Path(token).parts
    if token.startswith(("/", "~", "..")) or not parts:
        raise CommandError(f"{token}: use a relative path under one of {USER_ROOTS}")
    if (parts[0] in USER_ROOTS and len(parts) > 1) or token.rstrip("/") in USER_ROOTS:
        return
    if re.fullmatch(r"[\w.-]+/[\w.-]+", token) and token.split("/")[0] in HUB_NAMESPACES:
        return
    raise CommandError(
        f"{token}: does not exist in the repository, and is neither under a user folder {USER_ROOTS} nor a Hub id "
        f"of {HUB_NAMESPACES}"
    )


def check_paths(tokens: list[str]) -> None:
    for token in tokens:
        if token.startswith("-") or ENV_ASSIGNMENT.match(token):
            continue
        if token.startswith("https://") or is_path_like(token):
            check_path(token)


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option the parser (and its sub-commands) defines, exactly as spelled."""
    options = set()
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                options |= option_strings(subparser)
    return options


def check_flags_spelled(args: list[str], parser: argparse.ArgumentParser, what: str) -> None:
    known = option_strings(parser)
    for token in args:
        if token.startswith("--") and token.split("=", 1)[0] not in known:
            raise CommandError(f"{what}: unknown flag {token.split('=', 1)[0]} (argparse would take it as an abbreviation or reject it)")


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace):
        super().__init__("parsed")
        self.parser, self.namespace = parser, namespace


def parse_with_main(main, args: list[str], what: str) -> argparse.Namespace:
    """Runs `main(args)` until its argparse parser has parsed `args`, then stops it (nothing else runs), and
    checks that every flag is spelled exactly as that parser defines it."""
    original = argparse.ArgumentParser.parse_args
    parsers = []

    def parse_args(self, arguments=None, namespace=None):
        parsers.append(self)
        raise _Parsed(self, original(self, arguments, namespace))

    stderr = io.StringIO()
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_args), mock.patch.object(sys, "argv", [what, *args]):
        try:
            with contextlib.redirect_stderr(stderr):
                main(args)
        except _Parsed as parsed:
            check_flags_spelled(args, parsed.parser, what)
            return parsed.namespace
        except SystemExit as exit:
            if parsers:
                check_flags_spelled(args, parsers[-1], what)
            raise CommandError(f"{what} rejects {args}: {stderr.getvalue().strip()[-600:]}") from exit
    raise CommandError(f"{what}: main() returned without parsing its arguments with argparse")


# ------------------------------------------------------------------------------------------ per command


@contextlib.contextmanager
def bf16_gpu_pretended():
    """The Trainer refuses `bf16: true` without a bf16 GPU; the recipes are for GPUs, this machine may have none."""
    with mock.patch("transformers.training_args.is_torch_bf16_gpu_available", return_value=True):
        yield


def finetune_parser():
    from transformers import HfArgumentParser

    import finetune

    return HfArgumentParser(finetune.ARGUMENT_GROUPS)


def reporting_errors(what: str, function, *args, **kwargs):
    """`function(*args, **kwargs)`; a ValueError or an argparse exit becomes a CommandError with the message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return function(*args, **kwargs)
    except (ValueError, SystemExit) as error:
        raise CommandError(f"{what}: {stderr.getvalue().strip()[-600:] or error}") from error


def check_finetune(args: list[str]) -> None:
    import finetune

    if args and args[0].endswith((".yaml", ".yml", ".json")) and not (ROOT / args[0]).is_file():
        raise CommandError(f"finetune.py: recipe {args[0]} does not exist")
    check_flags_spelled(args, finetune_parser(), "finetune.py")
    if "--help" in args or "-h" in args:
        return
    argv = [str(ROOT / args[0]), *args[1:]] if args and not args[0].startswith("-") else args
    with bf16_gpu_pretended():
        reporting_errors(f"finetune.py {' '.join(args)}", finetune.parse_arguments, argv)


def check_generate(args: list[str]) -> None:
    from transformers import HfArgumentParser

    import generate

    parser = HfArgumentParser(generate.GenerateArguments)
    check_flags_spelled(args, parser, "generate.py")
    (parsed,) = reporting_errors(f"generate.py {' '.join(args)}", parser.parse_args_into_dataclasses, args=args)
    readers = ("studies_from_dataset", "studies_from_images", "studies_from_folder", "studies_from_listing")
    with contextlib.ExitStack() as stack:
        for name in readers:
            stack.enter_context(mock.patch.object(generate, name, return_value=[]))
        stack.enter_context(mock.patch.object(generate, "studies_from_rexrank", return_value=([], {})))
        try:
            generate.select_studies(parsed)
        except ValueError as error:
            raise CommandError(f"generate.py {' '.join(args)}: {error}") from error


def check_argparse_module(module_name: str, args: list[str]) -> None:
    module = importlib.import_module(module_name)
    parse_with_main(module.main, args, f"python -m {module_name}")


def check_bench_script(script: str, args: list[str]) -> None:
    path = ROOT / script
    if not path.is_file():
        raise CommandError(f"{script} does not exist")
    spec = importlib.util.spec_from_file_location(f"_readme_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    with mock.patch.object(sys, "path", [str(path.parent), *sys.path]):
        spec.loader.exec_module(module)
    parse_with_main(module.main, args, script)


def check_bench_module(args: list[str]) -> None:
    if not (ROOT / "bench" / "__main__.py").exists():
        pytest.skip("bench/__main__.py does not exist yet (python -m bench is being built)")
    with mock.patch.object(sys, "path", [str(ROOT), *sys.path]):
        module = importlib.import_module("bench.__main__")
    if not hasattr(module, "main"):
        raise CommandError("bench/__main__.py has no main() to check the arguments with")
    parse_with_main(module.main, args, "python -m bench")


def check_accelerate(args: list[str]) -> None:
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    try:
        script_index = next(i for i, token in enumerate(args) if token.endswith(".py"))
    except StopIteration:
        raise CommandError("accelerate launch: no training script") from None
    check_flags_spelled(args[:script_index], parser, "accelerate launch")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            parsed = parser.parse_args(args)
        except SystemExit as exit:
            raise CommandError(f"accelerate launch rejects {args[:script_index]}: {stderr.getvalue().strip()[-600:]}") from exit
    if parsed.config_file is None or not (ROOT / parsed.config_file).is_file():
        raise CommandError(f"accelerate launch: --config_file {parsed.config_file} is not a file of the repository")
    if parsed.training_script != "finetune.py":
        raise CommandError(f"accelerate launch: unknown training script {parsed.training_script}")
    check_finetune(list(parsed.training_script_args))


def makefile_names() -> tuple[set[str], set[str]]:
    """(targets, variables) defined in the Makefile."""
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.M))
    variables = set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*[?:+]?=", text, flags=re.M))
    return targets, variables


def check_make(args: list[str]) -> None:
    targets, variables = makefile_names()
    for token in args:
        if token.startswith("-"):
            raise CommandError(f"make: option {token} is not a form the README uses")
        if "=" in token:
            name, value = token.split("=", 1)
            if name not in variables:
                raise CommandError(f"make: {name} is not a Makefile variable ({sorted(variables)})")
            if name == "DEMO_ARGS":
                check_finetune(["configs/demo.yaml", *shlex.split(value)])
        elif token not in targets:
            raise CommandError(f"make: no target {token!r} in the Makefile ({sorted(targets)})")


def setup_extras() -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return set(config["options.extras_require"])


def check_pip(args: list[str]) -> None:
    if len(args) != 3 or args[:2] != ["install", "-e"]:
        raise CommandError(f"pip {' '.join(args)}: the README installs only with `pip install -e \".[extras]\"`")
    match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", args[2])
    if not match:
        raise CommandError(f"pip install -e {args[2]}: expected .[extra,...]")
    unknown = set((match.group(1) or "").split(",")) - setup_extras() - {""}
    if unknown:
        raise CommandError(f"pip install: extras {sorted(unknown)} are not in setup.cfg")


def check_external(program: str, args: list[str]) -> None:
    if program == "hf":
        if args == ["auth", "login"] or (len(args) == 2 and args[0] == "download"):
            return
        raise CommandError(f"hf {' '.join(args)}: not a form the README uses (hf auth login, hf download <repo>)")
    if program == "export":
        if len(args) == 1 and ENV_ASSIGNMENT.match(args[0]):
            return
        raise CommandError(f"export {' '.join(args)}: expected export NAME=value")
    if program == "wget":
        if not any(token.startswith("https://") for token in args):
            raise CommandError("wget without an https URL")
        return
    if program == "unzip":
        if len(args) == 3 and args[1] == "-d" and args[0].endswith(".zip"):
            return
        raise CommandError(f"unzip {' '.join(args)}: expected unzip <file>.zip -d <folder>")
    raise CommandError(f"unknown command {program!r}")


def check_command(text: str) -> None:
    """Raises CommandError when the command would not run as written (see the module docstring)."""
    tokens = shlex.split(text, comments=True)
    operators = [token for token in tokens if token in SHELL_OPERATORS or token.endswith(";")]
    if operators:
        raise CommandError(f"{text}: one plain command per line, without {operators}")
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]  # NAME=value prefixes set the environment of the command
    if not tokens:
        raise CommandError(f"{text}: no command")
    program, args = tokens[0], tokens[1:]
    check_paths(args)
    if program in ("python", "python3"):
        if args[:1] == ["finetune.py"]:
            return check_finetune(args[1:])
        if args[:1] == ["generate.py"]:
            return check_generate(args[1:])
        if re.fullmatch(r"bench/\w+\.py", args[0] if args else ""):
            return check_bench_script(args[0], args[1:])
        if len(args) >= 2 and args[0] == "-m":
            module = args[1]
            if re.fullmatch(r"data_prep\.\w+", module) and (ROOT / "data_prep" / f"{module.split('.')[1]}.py").is_file():
                return check_argparse_module(module, args[2:])
            if module in ("r2gen_hf.hub", "r2gen_hf.demo"):
                return check_argparse_module(module, args[2:])
            if module == "bench":
                return check_bench_module(args[2:])
        raise CommandError(f"{text}: unknown python command form")
    if program == "accelerate":
        if args[:1] != ["launch"]:
            raise CommandError(f"{text}: only `accelerate launch` is checked")
        return check_accelerate(args[1:])
    if program == "make":
        return check_make(args)
    if program == "pip":
        return check_pip(args)
    return check_external(program, args)


# ------------------------------------------------------------------------------------------------ tests

COMMANDS = readme_commands()


def test_readme_has_the_commands_and_markers():
    text = README.read_text()
    forms = [" ".join(shlex.split(command, comments=True)[:2]) for _, command in COMMANDS]
    for expected in ("make demo", "make test", "python finetune.py", "accelerate launch", "python generate.py", "python -m"):
        assert any(form.startswith(expected) for form in forms), expected
    start, end = text.find("<!-- bench-table:start -->"), text.find("<!-- bench-table:end -->")
    assert 0 <= start < end and text.count("<!-- bench-table:start -->") == 1 and text.count("<!-- bench-table:end -->") == 1


@pytest.mark.parametrize("line, command", COMMANDS, ids=[f"L{line}:{command[:60]}" for line, command in COMMANDS])
def test_readme_command_runs_as_written(line, command):
    try:
        check_command(command)
    except CommandError as error:
        pytest.fail(f"README.md:{line}: {command}\n{error}")


PYTHON_BLOCKS = fenced_blocks(README.read_text(), "python")


@pytest.mark.parametrize("line, block", PYTHON_BLOCKS, ids=[f"L{line}" for line, _ in PYTHON_BLOCKS])
def test_readme_python_block_compiles_and_imports_resolve(line, block):
    tree = compile(block, f"README.md:{line}", "exec", flags=ast.PyCF_ONLY_AST)
    compile(tree, f"README.md:{line}", "exec")
    for node in ast.walk(tree):  # every import: r2gen_hf's, and transformers' / PIL's names too
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                    f"README.md:{line}: `from {node.module} import {alias.name}` does not resolve"
                )


@pytest.mark.parametrize(
    "command, message",
    [
        ("python finetune.py configs/iu_xray_gemma3_4b.yaml --learning_rat 5e-5", "unknown flag --learning_rat"),
        ("python finetune.py configs/iu_xray_gemma3_4b.yaml --alignment medium", "invalid choice"),
        ("python finetune.py configs/iu_xray_gemma3_4bb.yaml", "does not exist"),
        ("accelerate launch --config_file configs/accelerate/zero9.yaml finetune.py configs/tiny.yaml", "does not exist"),
        ("accelerate launch --num_procesess 2 finetune.py configs/tiny.yaml", "unknown flag --num_procesess"),
        ("python generate.py --model runs/x --dataset_dir data/x --num_beam 3", "unknown flag --num_beam"),
        ("python generate.py --model runs/x --dataset_dir data/x --images studies/a.png", "exactly one input"),
        ("python -m data_prep.iu_xray --reports downloads/r.tgz --images downloads/p.tgz --ouput data/x", "unknown flag --ouput"),
        ("python -m data_prep.mimic_cxr --annotation downloads/a.json --jpg_root downloads/j --output data/x", "rejects"),
        ("python -m data_prep.openi --output data/x", "unknown python command form"),
        ("python -m r2gen_hf.hub runs/x you/y --dryrun", "unknown flag --dryrun"),
        ("make demoo", "no target"),
        ("make test PYTEST_ARG=-x", "not a Makefile variable"),
        ("make demo DEMO_ARGS='--num_train_epoch 1'", "unknown flag --num_train_epoch"),
        ('pip install -e ".[quantisation]"', "not in setup.cfg"),
        ("python generate.py --model runs/x --images frontal.png --output outputs/x.jsonl", "frontal.png"),
        ("python finetune.py configs/tiny.yaml --output_dir /tmp/run", "relative path"),
        ("rm -rf outputs", "unknown command"),
        ("python finetune.py configs/tiny.yaml && make test", "one plain command"),
    ],
)
def test_misspelled_or_unknown_commands_are_caught(command, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        check_command(command)
