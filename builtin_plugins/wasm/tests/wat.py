"""WAT sources of the test modules: one good echo, one counter, and the hostile ones.

Each is a WASI command (see docs/wasm.md): JSON on stdin, JSON on stdout, exit code 0.
"""

from __future__ import annotations

_HEAD = """
 (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
 (memory (export "memory") 1)
 ;; write(fd, ptr, len) -> errno, through an iovec at 0..8 and nwritten at 8
 (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
   (i32.store (i32.const 0) (local.get $ptr))
   (i32.store (i32.const 4) (local.get $len))
   (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
"""


def module(body: str, data: str = "", imports: str = "") -> str:
    return f"(module {imports} {_HEAD} {data} {body})"


# Reads all of stdin into memory at 1024 and writes it back: a JSON echo.
ECHO = module("""
 (func (export "_start") (local $n i32)
   (local.set $n (i32.const 0))
   (block $done
     (loop $more
       (i32.store (i32.const 16) (i32.add (i32.const 1024) (local.get $n)))
       (i32.store (i32.const 20) (i32.sub (i32.const 60000) (local.get $n)))
       (br_if $done (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
       (br_if $done (i32.eqz (i32.load (i32.const 24))))
       (local.set $n (i32.add (local.get $n) (i32.load (i32.const 24))))
       (br $more)))
   (drop (call $write (i32.const 1) (i32.const 1024) (local.get $n))))
""")

# A global counter incremented once per call: every call of a fresh instance says 1.
COUNTER = module(
    """
 (global $count (mut i32) (i32.const 0))
 (func (export "_start")
   (global.set $count (i32.add (global.get $count) (i32.const 1)))
   (i32.store8 (i32.const 109) (i32.add (i32.const 48) (global.get $count)))
   (drop (call $write (i32.const 1) (i32.const 100) (i32.const 11))))
""",
    '(data (i32.const 100) "{\\"count\\":0}")',
)

LOOP = module('(func (export "_start") (loop $forever (br $forever)))')

UNREACHABLE = module('(func (export "_start") unreachable)')

# Grows memory a page at a time until refused, then gives up the way allocators do.
GROW = module("""
 (func (export "_start")
   (loop $grow
     (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
   unreachable)
""")

# Writes 60,000 bytes at a time until a write fails.
FLOOD = module("""
 (func (export "_start")
   (loop $again
     (br_if $again (i32.eqz (call $write (i32.const 1) (i32.const 1024) (i32.const 60000))))))
""")

NOT_JSON = module(
    '(func (export "_start") (drop (call $write (i32.const 1) (i32.const 100) (i32.const 5))))',
    '(data (i32.const 100) "hello")',
)

FAILS = module(
    """
 (func (export "_start")
   (drop (call $write (i32.const 2) (i32.const 100) (i32.const 14)))
   (call $proc_exit (i32.const 3)))
""",
    '(data (i32.const 100) "boom: bad day\\n")',
)

# Exits with the errno clock_time_get returns (0 when the clock is granted).
CLOCK = module(
    """
 (func (export "_start")
   (call $proc_exit (call $clock (i32.const 0) (i64.const 1) (i32.const 200))))
""",
    imports='(import "wasi_snapshot_preview1" "clock_time_get" '
    "(func $clock (param i32 i64 i32) (result i32)))",
)


def file_module(path: str, write: bool) -> str:
    """Opens ``path`` in the first pre-opened folder (fd 3); exits with the errno on
    failure; on success writes the file's content to stdout (read) or writes to it."""
    oflags = 1 if write else 0  # O_CREAT
    rights = 64 if write else 2  # fd_write / fd_read
    action = (
        """
   (if (call $write (i32.load (i32.const 40)) (i32.const 300) (i32.const 2))
     (then (call $proc_exit (i32.const 99))))
   (drop (call $write (i32.const 1) (i32.const 300) (i32.const 2)))
"""
        if write
        else """
   (i32.store (i32.const 16) (i32.const 1024))
   (i32.store (i32.const 20) (i32.const 4096))
   (local.set $e (call $fd_read (i32.load (i32.const 40)) (i32.const 16) (i32.const 1) (i32.const 24)))
   (if (local.get $e) (then (call $proc_exit (local.get $e))))
   (drop (call $write (i32.const 1) (i32.const 1024) (i32.load (i32.const 24))))
"""
    )
    encoded = path.encode()
    body = f"""
 (func (export "_start") (local $e i32)
   (local.set $e (call $path_open (i32.const 3) (i32.const 0) (i32.const 200)
     (i32.const {len(encoded)}) (i32.const {oflags}) (i64.const {rights}) (i64.const 0)
     (i32.const 0) (i32.const 40)))
   (if (local.get $e) (then (call $proc_exit (local.get $e))))
   {action})"""
    return module(
        body,
        data=f'(data (i32.const 200) "{path}") (data (i32.const 300) "{{}}")',
        imports='(import "wasi_snapshot_preview1" "path_open" '
        "(func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))",
    )
