"""A small renderer for the Go-template subset the peerd chart uses, so the chart can be rendered and checked
without helm (helm is not a Debian package).

Supported (anything else raises TemplateError, so a template using more fails the test instead of rendering
wrongly):
  * text and actions `{{ ... }}` with the trim markers `{{- ` and ` -}}`; comments `{{/* ... */}}`;
  * `if` / `else if` / `else` / `end`, `with` (+ `else`), `range` over lists and maps (`range $v := x`,
    `range $i, $v := x`, + `else`), `define`, `template "name" pipeline`;
  * pipelines `a | f b | g`, parenthesised sub-pipelines (also `(x).field`), variables `$`, `$x := ...`,
    `$x = ...`, fields `.A.B` and `$x.A`, string / raw-string / number / true / false / nil literals;
  * Go's truthiness (false, 0, "", empty list or map and nil are false);
  * functions: Go's and, or, not, eq, ne, lt, le, gt, ge, len, print, printf (%s %d %v %q %%);
    Sprig's default, empty, coalesce, ternary, quote, squote, trunc, trimSuffix, trimPrefix, hasPrefix,
    hasSuffix, contains, replace, lower, upper, join, list, dict, hasKey, toString, int, indent, nindent,
    toYaml, required, fail; Helm's include.
Values print as Helm prints them: nil as "", booleans as true/false, whole numbers without a fraction.
A missing map key gives nil (as in Helm); a field of nil is an error (as in Helm).
"""

import json
import re

import yaml


class TemplateError(Exception):
    pass


_ACTION = re.compile(r"\{\{(-[ \t\r\n])?(.*?)([ \t\r\n]-)?\}\}", re.S)
_WS = " \t\r\n"


# ---- lexing and parsing -------------------------------------------------------------------------------------

def _split(source, name):
    """Text and action items with Go's trim markers applied to the neighbouring text."""
    items = []
    position = 0
    for match in _ACTION.finditer(source):
        items.append(["text", source[position:match.start()]])
        body = match.group(2).strip()
        items.append(["action", body, bool(match.group(1)), bool(match.group(3))])
        position = match.end()
    items.append(["text", source[position:]])
    for index, item in enumerate(items):
        if item[0] != "action":
            continue
        if item[2] and index > 0:
            items[index - 1][1] = items[index - 1][1].rstrip(_WS)
        if item[3] and index + 1 < len(items):
            items[index + 1][1] = items[index + 1][1].lstrip(_WS)
    result = []
    for item in items:
        if item[0] == "text":
            if item[1]:
                result.append(("text", item[1]))
        elif item[1].startswith("/*"):
            if not item[1].endswith("*/"):
                raise TemplateError(f"{name}: unterminated comment")
        else:
            result.append(("action", item[1]))
    return result


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<comma>,)
  | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""", re.X)


def _lex(text, name):
    """Tokens as (kind, text, adjacent): adjacent means no space since the previous token (for `(x).field`)."""
    tokens = []
    position = 0
    previous_end = -1
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise TemplateError(f"{name}: cannot lex {text[position:]!r}")
        kind = match.lastgroup
        if kind != "space":
            tokens.append((kind, match.group(kind), match.start() == previous_end))
            previous_end = match.end()
        position = match.end()
    return tokens


class _Parser:
    """Parses the tokens of one action into a pipeline: (declared variables, operator, [commands])."""

    def __init__(self, tokens, name):
        self.tokens = tokens
        self.position = 0
        self.name = name

    def peek(self, offset=0):
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else (None, None, False)

    def take(self):
        token = self.peek()
        self.position += 1
        return token

    def pipeline(self, allow_declaration=True):
        variables, operator = [], None
        if allow_declaration and self.peek()[0] == "variable":
            if self.peek(1)[0] in ("declare", "assign"):
                variables = [self.take()[1]]
                operator = self.take()[0]
            elif self.peek(1)[0] == "comma" and self.peek(2)[0] == "variable" and self.peek(3)[0] == "declare":
                first = self.take()[1]
                self.take()
                variables = [first, self.take()[1]]
                operator = self.take()[0]
        commands = [self.command()]
        while self.peek()[0] == "pipe":
            self.take()
            commands.append(self.command())
        return (variables, operator, commands)

    def command(self):
        operands = []
        while self.peek()[0] not in (None, "pipe", "close"):
            operands.append(self.operand())
        if not operands:
            raise TemplateError(f"{self.name}: empty command")
        return operands

    def operand(self):
        kind, value, _ = self.take()
        if kind == "open":
            inner = self.pipeline(allow_declaration=False)
            if self.take()[0] != "close":
                raise TemplateError(f"{self.name}: missing )")
            node = ("paren", inner)
            if self.peek()[0] == "field" and self.peek()[2]:
                node = ("chain", node, self.take()[1])
            return node
        if kind == "string":
            return ("literal", json.loads(value))
        if kind == "raw":
            return ("literal", value[1:-1])
        if kind == "number":
            return ("literal", float(value) if "." in value else int(value))
        if kind == "ident":
            if value in ("true", "false"):
                return ("literal", value == "true")
            if value == "nil":
                return ("literal", None)
            return ("function", value)
        if kind in ("field", "variable"):
            return (kind, value)
        raise TemplateError(f"{self.name}: unexpected {value!r}")


def _parse_pipeline(text, name, allow_declaration=True):
    parser = _Parser(_lex(text, name), name)
    pipeline = parser.pipeline(allow_declaration)
    if parser.peek()[0] is not None:
        raise TemplateError(f"{name}: unexpected {parser.peek()[1]!r} in {text!r}")
    return pipeline


def _parse(items, name, defines):
    """Builds the node tree; `define` bodies go to `defines`. Returns the top-level nodes."""
    root = []
    stack = [("root", root, None)]  # (kind, current body list, node)

    def body():
        return stack[-1][1]

    for kind, text in items:
        if kind == "text":
            body().append(("text", text))
            continue
        keyword = text.split(None, 1)[0] if text else ""
        rest = text[len(keyword):].strip()
        if keyword == "if":
            node = {"kind": "if", "branches": [(_parse_pipeline(rest, name), [])], "else": None}
            body().append(node)
            stack.append(("if", node["branches"][0][1], node))
        elif keyword in ("with", "range"):
            node = {"kind": keyword, "pipeline": _parse_pipeline(rest, name), "body": [], "else": None}
            body().append(node)
            stack.append((keyword, node["body"], node))
        elif keyword == "define":
            define_name = json.loads(rest)
            node = {"kind": "define", "body": []}
            defines[define_name] = node["body"]
            stack.append(("define", node["body"], node))
        elif keyword == "else":
            block_kind, _, node = stack[-1]
            if block_kind not in ("if", "with", "range", "else"):
                raise TemplateError(f"{name}: else outside if/with/range")
            if block_kind == "else":
                raise TemplateError(f"{name}: else after else")
            stack.pop()
            if rest.startswith("if ") and block_kind == "if":
                branch = (_parse_pipeline(rest[3:], name), [])
                node["branches"].append(branch)
                stack.append(("if", branch[1], node))
            elif rest:
                raise TemplateError(f"{name}: unsupported else form {text!r}")
            else:
                node["else"] = []
                stack.append(("else", node["else"], node))
        elif keyword == "end":
            if len(stack) == 1:
                raise TemplateError(f"{name}: end without a block")
            stack.pop()
        elif keyword == "template":
            parts = _lex(rest, name)
            if not parts or parts[0][0] != "string":
                raise TemplateError(f"{name}: template needs a name")
            template_name = json.loads(parts[0][1])
            argument = rest[rest.index(parts[0][1]) + len(parts[0][1]):].strip()
            pipeline = _parse_pipeline(argument, name) if argument else None
            body().append({"kind": "template", "name": template_name, "pipeline": pipeline})
        elif keyword in ("block", "break", "continue"):
            raise TemplateError(f"{name}: '{keyword}' is not supported by this renderer")
        else:
            body().append({"kind": "action", "pipeline": _parse_pipeline(text, name)})
    if len(stack) != 1:
        raise TemplateError(f"{name}: unclosed {stack[-1][0]}")
    return root


# ---- values and functions -----------------------------------------------------------------------------------

def truthy(value):
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, (str, list, dict, tuple)):
        return len(value) > 0
    return True


def to_text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + " ".join(to_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{key}:{to_text(value[key])}" for key in sorted(value)) + "]"
    return str(value)


def _indent(spaces, text):
    pad = " " * int(spaces)
    return pad + to_text(text).replace("\n", "\n" + pad)


def _printf(form, *args):
    out, arguments = [], list(args)
    index = 0
    while index < len(form):
        char = form[index]
        if char != "%":
            out.append(char)
            index += 1
            continue
        verb = form[index + 1] if index + 1 < len(form) else ""
        index += 2
        if verb == "%":
            out.append("%")
            continue
        if not arguments:
            raise TemplateError(f"printf {form!r}: missing argument")
        argument = arguments.pop(0)
        if verb in ("s", "v"):
            out.append(to_text(argument))
        elif verb == "d":
            if isinstance(argument, bool) or not isinstance(argument, (int, float)):
                raise TemplateError(f"printf %d of {argument!r}")
            out.append(str(int(argument)))
        elif verb == "q":
            out.append(json.dumps(to_text(argument)))
        else:
            raise TemplateError(f"printf verb %{verb} is not supported")
    if arguments:
        raise TemplateError(f"printf {form!r}: extra arguments")
    return "".join(out)


def _to_int(value):
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    raise TemplateError(f"int of {value!r}")


def _required(message, value):
    if value is None or value == "":
        raise TemplateError(f"required: {message}")
    return value


def _fail(message):
    raise TemplateError(f"fail: {message}")


def _to_yaml(value):
    if value is None:
        return "null"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def _dict(*pairs):
    if len(pairs) % 2:
        raise TemplateError("dict needs key/value pairs")
    return {to_text(pairs[index]): pairs[index + 1] for index in range(0, len(pairs), 2)}


def _compare(operation):
    def compare(left, right):
        numbers = isinstance(left, (int, float)) and isinstance(right, (int, float))
        if not isinstance(left, type(right)) and not numbers:
            raise TemplateError(f"incompatible types for comparison: {left!r}, {right!r}")
        return operation(left, right)
    return compare


FUNCTIONS = {
    "and": lambda *args: next((arg for arg in args if not truthy(arg)), args[-1]),
    "or": lambda *args: next((arg for arg in args if truthy(arg)), args[-1]),
    "not": lambda value: not truthy(value),
    "eq": lambda first, *others: any(first == other for other in others),
    "ne": lambda left, right: left != right,
    "lt": _compare(lambda left, right: left < right),
    "le": _compare(lambda left, right: left <= right),
    "gt": _compare(lambda left, right: left > right),
    "ge": _compare(lambda left, right: left >= right),
    "len": lambda value: len(value),
    "print": lambda *args: "".join(to_text(arg) for arg in args),
    "printf": _printf,
    "default": lambda fallback, *given: given[0] if given and truthy(given[0]) else fallback,
    "empty": lambda value: not truthy(value),
    "coalesce": lambda *args: next((arg for arg in args if truthy(arg)), None),
    "ternary": lambda if_true, if_false, condition: if_true if truthy(condition) else if_false,
    "quote": lambda *args: " ".join(json.dumps(to_text(arg)) for arg in args if arg is not None),
    "squote": lambda *args: " ".join("'" + to_text(arg) + "'" for arg in args if arg is not None),
    "trunc": lambda count, text: to_text(text)[:count] if count >= 0 else to_text(text)[count:],
    "trimSuffix": lambda suffix, text: text[: -len(suffix)] if suffix and text.endswith(suffix) else text,
    "trimPrefix": lambda prefix, text: text[len(prefix):] if prefix and text.startswith(prefix) else text,
    "hasPrefix": lambda prefix, text: to_text(text).startswith(prefix),
    "hasSuffix": lambda suffix, text: to_text(text).endswith(suffix),
    "contains": lambda needle, text: needle in to_text(text),
    "replace": lambda old, new, text: to_text(text).replace(old, new),
    "lower": lambda text: to_text(text).lower(),
    "upper": lambda text: to_text(text).upper(),
    "join": lambda separator, items: separator.join(to_text(item) for item in (items or [])),
    "list": lambda *items: list(items),
    "dict": _dict,
    "hasKey": lambda mapping, key: key in mapping,
    "toString": to_text,
    "int": _to_int,
    "indent": _indent,
    "nindent": lambda spaces, text: "\n" + _indent(spaces, text),
    "toYaml": _to_yaml,
    "required": _required,
    "fail": _fail,
}


# ---- evaluation ---------------------------------------------------------------------------------------------

class Renderer:
    def __init__(self):
        self.defines = {}
        self.templates = {}

    def add(self, name, source):
        self.templates[name] = _parse(_split(source, name), name, self.defines)

    def render(self, name, data):
        out = []
        self._run(self.templates[name], data, [{"$": data}], out, name, 0)
        return "".join(out)

    def include(self, define_name, data, depth=0):
        if define_name not in self.defines:
            raise TemplateError(f"no template named {define_name!r}")
        if depth > 50:
            raise TemplateError(f"include {define_name!r}: recursion too deep")
        out = []
        self._run(self.defines[define_name], data, [{"$": data}], out, define_name, depth + 1)
        return "".join(out)

    def _run(self, nodes, dot, scopes, out, name, depth):
        for node in nodes:
            if isinstance(node, tuple):
                out.append(node[1])
                continue
            kind = node["kind"]
            if kind == "action":
                value = self._pipeline(node["pipeline"], dot, scopes, name, depth)
                if not node["pipeline"][0]:  # declarations print nothing
                    out.append(to_text(value))
            elif kind == "if":
                scopes.append({})
                for pipeline, branch in node["branches"]:
                    if truthy(self._pipeline(pipeline, dot, scopes, name, depth)):
                        self._run(branch, dot, scopes, out, name, depth)
                        break
                else:
                    if node["else"] is not None:
                        self._run(node["else"], dot, scopes, out, name, depth)
                scopes.pop()
            elif kind == "with":
                scopes.append({})
                value = self._pipeline(node["pipeline"], dot, scopes, name, depth)
                if truthy(value):
                    self._run(node["body"], value, scopes, out, name, depth)
                elif node["else"] is not None:
                    self._run(node["else"], dot, scopes, out, name, depth)
                scopes.pop()
            elif kind == "range":
                self._range(node, dot, scopes, out, name, depth)
            elif kind == "template":
                data = self._pipeline(node["pipeline"], dot, scopes, name, depth) if node["pipeline"] else None
                out.append(self.include(node["name"], data, depth))
            else:
                raise TemplateError(f"{name}: unknown node {kind}")

    def _range(self, node, dot, scopes, out, name, depth):
        variables, _, commands = node["pipeline"]
        scopes.append({})
        collection = self._commands(commands, dot, scopes, name, depth)
        if isinstance(collection, dict):
            pairs = [(key, collection[key]) for key in sorted(collection)]
        elif isinstance(collection, list):
            pairs = list(enumerate(collection))
        elif collection is None:
            pairs = []
        else:
            raise TemplateError(f"{name}: range over {type(collection).__name__}")
        for key, value in pairs:
            if len(variables) == 1:
                scopes[-1][variables[0]] = value
            elif len(variables) == 2:
                scopes[-1][variables[0]] = key
                scopes[-1][variables[1]] = value
            self._run(node["body"], value, scopes, out, name, depth)
        if not pairs and node["else"] is not None:
            self._run(node["else"], dot, scopes, out, name, depth)
        scopes.pop()

    def _pipeline(self, pipeline, dot, scopes, name, depth):
        variables, operator, commands = pipeline
        value = self._commands(commands, dot, scopes, name, depth)
        if operator == "declare":
            scopes[-1][variables[0]] = value
        elif operator == "assign":
            for scope in reversed(scopes):
                if variables[0] in scope:
                    scope[variables[0]] = value
                    break
            else:
                raise TemplateError(f"{name}: assignment to undefined {variables[0]}")
        return value

    def _commands(self, commands, dot, scopes, name, depth):
        value, piped = None, False
        for command in commands:
            value = self._command(command, dot, scopes, name, depth, value if piped else _NOTHING)
            piped = True
        return value

    def _command(self, command, dot, scopes, name, depth, piped):
        head = command[0]
        if head[0] == "function":
            arguments = [self._operand(operand, dot, scopes, name, depth) for operand in command[1:]]
            if piped is not _NOTHING:
                arguments.append(piped)
            return self._call(head[1], arguments, name, depth)
        if len(command) > 1 or piped is not _NOTHING:
            raise TemplateError(f"{name}: cannot call a non-function ({head[1]!r}) with arguments")
        return self._operand(head, dot, scopes, name, depth)

    def _call(self, function, arguments, name, depth):
        if function == "include":
            if len(arguments) != 2:
                raise TemplateError(f"{name}: include needs a name and data")
            return self.include(arguments[0], arguments[1], depth)
        if function not in FUNCTIONS:
            raise TemplateError(f"{name}: function {function!r} is not supported by this renderer")
        try:
            return FUNCTIONS[function](*arguments)
        except TemplateError:
            raise
        except TypeError as error:
            raise TemplateError(f"{name}: {function}: {error}") from None

    def _operand(self, operand, dot, scopes, name, depth):
        kind = operand[0]
        if kind == "literal":
            return operand[1]
        if kind == "field":
            return _fields(dot, operand[1], name)
        if kind == "variable":
            variable, _, path = operand[1].partition(".")
            for scope in reversed(scopes):
                if variable in scope:
                    return _fields(scope[variable], "." + path if path else ".", name)
            raise TemplateError(f"{name}: undefined variable {variable}")
        if kind == "paren":
            return self._pipeline(operand[1], dot, scopes, name, depth)
        if kind == "chain":
            return _fields(self._operand(operand[1], dot, scopes, name, depth), operand[2], name)
        if kind == "function":
            return self._call(operand[1], [], name, depth)
        raise TemplateError(f"{name}: bad operand {operand!r}")


_NOTHING = object()


def _fields(value, path, name):
    if path == ".":
        return value
    for field in path.strip(".").split("."):
        if value is None:
            raise TemplateError(f"{name}: nil pointer evaluating {path} (at .{field})")
        if not isinstance(value, dict):
            raise TemplateError(f"{name}: can't evaluate field {field} in {type(value).__name__}")
        value = value.get(field)
    return value
