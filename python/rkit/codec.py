"""bincode 2 (standard configuration) driven by the formats a server
describes (docs/PROTOCOL.md sections 6 and 9): Python values to bytes and
back.

Values have the JSON shapes of the `rpc` command line: dict for a struct,
"Variant" or {"Variant": value} for an enum, None for an empty Option,
bytes for BYTES, list or tuple for sequences and tuples, dict for maps.
"""

import struct

from .errors import DecodeError

_UNSIGNED = {"U8": 8, "U16": 16, "U32": 32, "U64": 64, "U128": 128}
_SIGNED = {"I8": 8, "I16": 16, "I32": 32, "I64": 64, "I128": 128}


class ArgumentError(TypeError):
    """A value does not fit the type the server described."""




def _varint(n, out):
    if n < 251:
        out.append(n)
    elif n < 1 << 16:
        out.append(251)
        out += n.to_bytes(2, "little")
    elif n < 1 << 32:
        out.append(252)
        out += n.to_bytes(4, "little")
    elif n < 1 << 64:
        out.append(253)
        out += n.to_bytes(8, "little")
    else:
        out.append(254)
        out += n.to_bytes(16, "little")


def _read_varint(buf, pos):
    first = buf[pos]
    if first < 251:
        return first, pos + 1
    size = {251: 2, 252: 4, 253: 8, 254: 16}.get(first)
    if size is None:
        raise ValueError("bad varint marker %d" % first)
    end = pos + 1 + size
    if end > len(buf):
        raise ValueError("the value ends early")
    return int.from_bytes(buf[pos + 1:end], "little"), end


class Codec:
    """Encodes and decodes values of the formats in `registry`."""

    def __init__(self, registry):
        self.registry = registry or {}
        # When a dict: struct fields left out of the values encoded, by
        # type name, and those given, so that the call can claim a schema
        # without them (docs/PROTOCOL.md section 12). None: a missing
        # field is an error.
        self.omitted = None
        self.given = None

    def encode(self, value, fmt, out, where="value"):
        if isinstance(fmt, str):
            return self._encode_primitive(value, fmt, out, where)
        (kind, inner), = fmt.items()
        if kind == "OPTION":
            if value is None:
                out.append(0)
            else:
                out.append(1)
                self.encode(value, inner, out, where)
        elif kind == "SEQ":
            if not isinstance(value, (list, tuple)):
                raise ArgumentError("%s: expected a list, found %r" % (where, value))
            _varint(len(value), out)
            for i, item in enumerate(value):
                self.encode(item, inner, out, "%s[%d]" % (where, i))
        elif kind == "MAP":
            if not isinstance(value, dict):
                raise ArgumentError("%s: expected a dict, found %r" % (where, value))
            _varint(len(value), out)
            for key, item in value.items():
                self.encode(key, inner["KEY"], out, "%s key" % where)
                self.encode(item, inner["VALUE"], out, "%s[%r]" % (where, key))
        elif kind == "TUPLE":
            if not isinstance(value, (list, tuple)) or len(value) != len(inner):
                raise ArgumentError("%s: expected %d values, found %r" % (where, len(inner), value))
            for i, (item, f) in enumerate(zip(value, inner)):
                self.encode(item, f, out, "%s[%d]" % (where, i))
        elif kind == "TUPLEARRAY":
            if not isinstance(value, (list, tuple)) or len(value) != inner["SIZE"]:
                raise ArgumentError("%s: expected %d values" % (where, inner["SIZE"]))
            for i, item in enumerate(value):
                self.encode(item, inner["CONTENT"], out, "%s[%d]" % (where, i))
        elif kind == "TYPENAME":
            self._encode_container(value, inner, out, where)
        else:
            raise ArgumentError("%s: unknown format %r" % (where, fmt))

    def _encode_primitive(self, value, fmt, out, where):
        def wrong(expected):
            return ArgumentError("%s: expected %s, found %r" % (where, expected, value))

        if fmt == "UNIT":
            if value is not None:
                raise wrong("None")
        elif fmt == "BOOL":
            if not isinstance(value, bool):
                raise wrong("a bool")
            out.append(1 if value else 0)
        elif fmt in _UNSIGNED:
            bits = _UNSIGNED[fmt]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
                raise wrong(fmt.lower())
            if bits == 8:
                out.append(value)
            else:
                _varint(value, out)
        elif fmt in _SIGNED:
            bits = _SIGNED[fmt]
            if isinstance(value, bool) or not isinstance(value, int) or not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
                raise wrong(fmt.lower())
            if bits == 8:
                out += struct.pack("<b", value)
            else:
                # Zigzag with fixed-width shifts: Python's ints are unbounded.
                _varint(((value << 1) ^ (value >> (bits - 1))) & ((1 << bits) - 1), out)
        elif fmt in ("F32", "F64"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise wrong("a number")
            out += struct.pack("<f" if fmt == "F32" else "<d", value)
        elif fmt == "CHAR":
            if not isinstance(value, str) or len(value) != 1:
                raise wrong("one character")
            out += value.encode("utf-8")
        elif fmt == "STR":
            if not isinstance(value, str):
                raise wrong("a str")
            data = value.encode("utf-8")
            _varint(len(data), out)
            out += data
        elif fmt == "BYTES":
            if not isinstance(value, (bytes, bytearray)):
                raise wrong("bytes")
            _varint(len(value), out)
            out += value
        else:
            raise ArgumentError("%s: unknown format %r" % (where, fmt))

    def _encode_container(self, value, name, out, where):
        container = self.registry.get(name)
        if container is None:
            raise ArgumentError("%s: the server did not describe type %s" % (where, name))
        if isinstance(container, str):  # UNITSTRUCT
            return
        (kind, inner), = container.items()
        if kind == "NEWTYPESTRUCT":
            self.encode(value, inner, out, where)
        elif kind == "TUPLESTRUCT":
            self.encode(value, {"TUPLE": inner}, out, where)
        elif kind == "STRUCT":
            self._encode_fields(value, inner, out, "%s (%s)" % (where, name), name)
        elif kind == "ENUM":
            if isinstance(value, str):
                variant, payload = value, None
            elif isinstance(value, dict) and len(value) == 1:
                (variant, payload), = value.items()
            else:
                raise ArgumentError('%s: expected %s, as "Variant" or {"Variant": value}, found %r' % (where, name, value))
            for index, entry in inner.items():
                (vname, vformat), = entry.items()
                if vname == variant:
                    _varint(int(index), out)
                    self._encode_variant(payload, vformat, out, "%s (%s::%s)" % (where, name, vname))
                    return
            names = [next(iter(e)) for e in inner.values()]
            raise ArgumentError("%s: %s has no variant %r (it has %s)" % (where, name, variant, ", ".join(names)))

    def _encode_variant(self, payload, vformat, out, where):
        if vformat == "UNIT":
            return
        (kind, inner), = vformat.items()
        if kind == "NEWTYPE":
            self.encode(payload, inner, out, where)
        elif kind == "TUPLE":
            self.encode(payload, {"TUPLE": inner}, out, where)
        elif kind == "STRUCT":
            self._encode_fields(payload, inner, out, where)

    def _encode_fields(self, value, fields, out, where, type_name=None):
        if not isinstance(value, dict):
            raise ArgumentError("%s: expected a dict of fields, found %r" % (where, value))
        for field in fields:
            (fname, fformat), = field.items()
            if fname not in value:
                if self.omitted is None or type_name is None:
                    raise ArgumentError("%s: field %r is missing" % (where, fname))
                self.omitted.setdefault(type_name, set()).add(fname)
                continue
            if self.given is not None and type_name is not None:
                self.given.setdefault(type_name, set()).add(fname)
            self.encode(value[fname], fformat, out, "%s.%s" % (where, fname))

    def read(self, buf, pos, fmt, what="the reply"):
        """`decode`, with any failure a `DecodeError` naming `what`."""
        try:
            return self.decode(buf, pos, fmt)
        except (IndexError, KeyError, ValueError, UnicodeDecodeError, struct.error, RecursionError) as e:
            raise DecodeError("%s does not decode as the server described it: %s" % (what, e or type(e).__name__)) from None

    def decode(self, buf, pos, fmt):
        if isinstance(fmt, str):
            return self._decode_primitive(buf, pos, fmt)
        (kind, inner), = fmt.items()
        if kind == "OPTION":
            tag = buf[pos]
            if tag == 0:
                return None, pos + 1
            return self.decode(buf, pos + 1, inner)
        if kind == "SEQ":
            n, pos = _read_varint(buf, pos)
            items = []
            for _ in range(n):
                item, pos = self.decode(buf, pos, inner)
                items.append(item)
            return items, pos
        if kind == "MAP":
            n, pos = _read_varint(buf, pos)
            result = {}
            for _ in range(n):
                key, pos = self.decode(buf, pos, inner["KEY"])
                item, pos = self.decode(buf, pos, inner["VALUE"])
                result[key] = item
            return result, pos
        if kind in ("TUPLE", "TUPLEARRAY"):
            formats = inner if kind == "TUPLE" else [inner["CONTENT"]] * inner["SIZE"]
            items = []
            for f in formats:
                item, pos = self.decode(buf, pos, f)
                items.append(item)
            return tuple(items), pos
        if kind == "TYPENAME":
            return self._decode_container(buf, pos, inner)
        raise ValueError("unknown format %r" % (fmt,))

    def _decode_primitive(self, buf, pos, fmt):
        if fmt == "UNIT":
            return None, pos
        if fmt == "BOOL":
            return buf[pos] != 0, pos + 1
        if fmt == "U8":
            return buf[pos], pos + 1
        if fmt == "I8":
            return struct.unpack_from("<b", buf, pos)[0], pos + 1
        if fmt in _UNSIGNED:
            return _read_varint(buf, pos)
        if fmt in _SIGNED:
            n, pos = _read_varint(buf, pos)
            return (n >> 1) ^ -(n & 1), pos
        if fmt == "F32":
            return struct.unpack_from("<f", buf, pos)[0], pos + 4
        if fmt == "F64":
            return struct.unpack_from("<d", buf, pos)[0], pos + 8
        if fmt == "CHAR":
            first = buf[pos]
            size = 1 if first < 0x80 else 2 if first < 0xE0 else 3 if first < 0xF0 else 4
            return bytes(buf[pos:pos + size]).decode("utf-8"), pos + size
        if fmt in ("STR", "BYTES"):
            n, pos = _read_varint(buf, pos)
            data = bytes(buf[pos:pos + n])
            if len(data) != n:
                raise ValueError("the value ends early")
            return (data.decode("utf-8") if fmt == "STR" else data), pos + n
        raise ValueError("unknown format %r" % (fmt,))

    def _decode_container(self, buf, pos, name):
        container = self.registry[name]
        if isinstance(container, str):
            return None, pos
        (kind, inner), = container.items()
        if kind == "NEWTYPESTRUCT":
            return self.decode(buf, pos, inner)
        if kind == "TUPLESTRUCT":
            return self.decode(buf, pos, {"TUPLE": inner})
        if kind == "STRUCT":
            return self._decode_fields(buf, pos, inner)
        if kind == "ENUM":
            index, pos = _read_varint(buf, pos)
            entry = inner.get(str(index))
            if entry is None:
                raise ValueError("%s has no variant %d" % (name, index))
            (vname, vformat), = entry.items()
            if vformat == "UNIT":
                return vname, pos
            (vkind, vinner), = vformat.items()
            if vkind == "NEWTYPE":
                value, pos = self.decode(buf, pos, vinner)
            elif vkind == "TUPLE":
                value, pos = self.decode(buf, pos, {"TUPLE": vinner})
            else:
                value, pos = self._decode_fields(buf, pos, vinner)
            return {vname: value}, pos
        raise ValueError("unknown container %r" % (container,))

    def _decode_fields(self, buf, pos, fields):
        result = {}
        for field in fields:
            (fname, fformat), = field.items()
            result[fname], pos = self.decode(buf, pos, fformat)
        return result, pos
