"""``dataclasses`` for the modules PBS event hooks import, on Python 3.6 too.

PBS embeds the Python it was built with: 3.6 on EL8 and in PBS Professional
releases, where ``dataclasses`` (3.7) does not exist.  On 3.7 and later this is
the standard ``dataclasses`` module itself, so nothing changes there; on 3.6 it
is the small subset those modules use (``dataclass(frozen=...)``, ``field``,
``fields``, ``replace``, ``asdict``, ``MISSING``), with the same behaviour:
generated ``__init__``/``__repr__``/``__eq__``/``__hash__``, keyword or
positional arguments, frozen instances.  Stdlib only.
"""
try:
    import dataclasses
except ImportError:  # Python 3.6
    import copy as _copy
    import sys as _sys
    import types as _types

    class _Missing:
        def __repr__(self):
            return "MISSING"

    MISSING = _Missing()

    class FrozenInstanceError(AttributeError):
        pass

    class Field:
        __slots__ = ("name", "type", "default", "default_factory", "repr", "hash",
                     "init", "compare", "metadata")

        def __init__(self, default, default_factory, init, repr, hash, compare, metadata):
            self.name = None
            self.type = None
            self.default = default
            self.default_factory = default_factory
            self.init = init
            self.repr = repr
            self.hash = hash
            self.compare = compare
            self.metadata = metadata

        def __repr__(self):
            return "Field(name=%r,default=%r)" % (self.name, self.default)

    def field(*, default=MISSING, default_factory=MISSING, init=True, repr=True,
              hash=None, compare=True, metadata=None):
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        return Field(default, default_factory, init, repr, hash, compare, metadata)

    _FIELDS = "__dataclass_fields__"

    def fields(class_or_instance):
        try:
            fs = getattr(class_or_instance, _FIELDS)
        except AttributeError:
            raise TypeError("must be called with a dataclass type or instance") from None
        return tuple(fs.values())

    def is_dataclass(obj):
        return hasattr(obj, _FIELDS)

    def _frozen_setattr(self, name, value):
        raise FrozenInstanceError("cannot assign to field %r" % (name,))

    def _frozen_delattr(self, name):
        raise FrozenInstanceError("cannot delete field %r" % (name,))

    def _process(cls, frozen, eq, repr_):
        all_fields = {}
        for base in cls.__mro__[-1:0:-1]:
            all_fields.update(getattr(base, _FIELDS, {}))
        for name, tp in cls.__dict__.get("__annotations__", {}).items():
            if "ClassVar" in str(tp):
                continue
            default = cls.__dict__.get(name, MISSING)
            f = default if isinstance(default, Field) else field(default=default)
            f.name, f.type = name, tp
            if isinstance(f.default, (list, dict, set)):
                raise ValueError("mutable default %s for field %s is not allowed: use "
                                 "default_factory" % (type(f.default), name))
            if f.default is MISSING:
                if name in cls.__dict__:
                    delattr(cls, name)
            else:
                setattr(cls, name, f.default)
            all_fields[name] = f
        setattr(cls, _FIELDS, all_fields)
        flist = list(all_fields.values())

        # __init__, as dataclasses writes it: one exec'd function per class.
        env = {"MISSING": MISSING, "_set": object.__setattr__}
        args, body, seen_default = ["self"], [], False
        for f in flist:
            if not f.init:
                if f.default_factory is not MISSING:
                    env["_f_" + f.name] = f.default_factory
                    body.append(_assign(f.name, "_f_%s()" % f.name, frozen))
                elif f.default is not MISSING:
                    env["_d_" + f.name] = f.default
                    body.append(_assign(f.name, "_d_" + f.name, frozen))
                continue
            if f.default_factory is not MISSING:
                env["_f_" + f.name] = f.default_factory
                args.append("%s=MISSING" % f.name)
                body.append(_assign(f.name, "_f_%s() if %s is MISSING else %s"
                                    % (f.name, f.name, f.name), frozen))
                seen_default = True
            elif f.default is not MISSING:
                env["_d_" + f.name] = f.default
                args.append("%s=_d_%s" % (f.name, f.name))
                body.append(_assign(f.name, f.name, frozen))
                seen_default = True
            else:
                if seen_default:
                    raise TypeError("non-default argument %r follows default argument"
                                    % (f.name,))
                args.append(f.name)
                body.append(_assign(f.name, f.name, frozen))
        if hasattr(cls, "__post_init__"):
            body.append("self.__post_init__()")
        src = "def __init__(%s):\n    %s\n" % (", ".join(args), "\n    ".join(body or ["pass"]))
        exec(src, env)
        init = env["__init__"]
        init.__qualname__ = cls.__qualname__ + ".__init__"
        cls.__init__ = init

        shown = [f.name for f in flist if f.repr]
        compared = [f.name for f in flist if f.compare]
        hashed = [f.name for f in flist if (f.compare if f.hash is None else f.hash)]

        if repr_ and "__repr__" not in cls.__dict__:
            def __repr__(self):
                return "%s(%s)" % (type(self).__qualname__, ", ".join(
                    "%s=%r" % (n, getattr(self, n)) for n in shown))
            cls.__repr__ = __repr__
        if eq and "__eq__" not in cls.__dict__:
            def __eq__(self, other):
                if other.__class__ is self.__class__:
                    return (tuple(getattr(self, n) for n in compared)
                            == tuple(getattr(other, n) for n in compared))
                return NotImplemented
            cls.__eq__ = __eq__
        if "__hash__" not in cls.__dict__ or cls.__dict__["__hash__"] is None:
            if eq and frozen:
                def __hash__(self):
                    return hash(tuple(getattr(self, n) for n in hashed))
                cls.__hash__ = __hash__
            elif eq:
                cls.__hash__ = None
        if frozen:
            cls.__setattr__ = _frozen_setattr
            cls.__delattr__ = _frozen_delattr
        return cls

    def _assign(name, value, frozen):
        if frozen:
            return "_set(self, %r, %s)" % (name, value)
        return "self.%s = %s" % (name, value)

    def dataclass(cls=None, *, init=True, repr=True, eq=True, order=False,
                  unsafe_hash=False, frozen=False):
        if order or unsafe_hash or not init:
            raise NotImplementedError("order, unsafe_hash and init=False need Python 3.7+")

        def wrap(c):
            return _process(c, frozen, eq, repr)
        return wrap if cls is None else wrap(cls)

    def replace(obj, **changes):
        if not is_dataclass(obj) or isinstance(obj, type):
            raise TypeError("replace() should be called on dataclass instances")
        for f in fields(obj):
            if f.init and f.name not in changes:
                changes[f.name] = getattr(obj, f.name)
        return obj.__class__(**changes)

    def asdict(obj, *, dict_factory=dict):
        if not is_dataclass(obj) or isinstance(obj, type):
            raise TypeError("asdict() should be called on dataclass instances")
        return _asdict(obj, dict_factory)

    def _asdict(obj, dict_factory):
        if is_dataclass(obj) and not isinstance(obj, type):
            return dict_factory([(f.name, _asdict(getattr(obj, f.name), dict_factory))
                                 for f in fields(obj)])
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):
            return type(obj)(*[_asdict(v, dict_factory) for v in obj])
        if isinstance(obj, (list, tuple)):
            return type(obj)(_asdict(v, dict_factory) for v in obj)
        if isinstance(obj, dict):
            return type(obj)((_asdict(k, dict_factory), _asdict(v, dict_factory))
                             for k, v in obj.items())
        return _copy.deepcopy(obj)

    dataclasses = _types.ModuleType("dataclasses", __doc__)
    for _name in ("MISSING", "Field", "FrozenInstanceError", "field", "fields",
                  "is_dataclass", "dataclass", "replace", "asdict"):
        setattr(dataclasses, _name, globals()[_name])
    del _name, _sys
