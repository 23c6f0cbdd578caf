"""LLVM intrinsic calls for the numba kernels of the kNN search (AMX tiles, prefetches)."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

I8, I32, I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType(I8)


def call_intrinsic(builder: ir.IRBuilder, name: str, args: list, arg_types: list) -> None:
    """Emit ``call void @name(args)``, declaring the intrinsic in the module on first use."""
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), arg_types), name
    )
    builder.call(fn, args)


@intrinsic
def prefetch(typingctx, address):  # type: ignore[no-untyped-def]
    """Hint the CPU to bring the cache line at ``address`` into all cache levels."""

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        # read (0), keep in all levels (3), data cache (1)
        call_intrinsic(builder, "llvm.prefetch.p0",
                       [builder.inttoptr(args[0], PTR), I32(0), I32(3), I32(1)],
                       [PTR, I32, I32, I32])
        return context.get_dummy_value()

    return types.void(types.uintp), codegen
