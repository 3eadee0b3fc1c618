// A NOA WASM plugin in AssemblyScript: the text statistics of `{"text": "..."}`.
//
// It follows the ABI of docs/wasm.md: a WASI preview 1 command that reads its input as
// JSON on stdin and writes its output as JSON on stdout; a non-zero exit code (with a
// message on stderr) fails the call. Counts match Python's `len(text)`,
// `len(text.split())` and `len(text.encode())`.

// `process` is the WASI shim's (asconfig.json extends @assemblyscript/wasi-shim).

const CHUNK = 4096;

// All of stdin, read until end of file.
function readStdin(): Uint8Array {
  let data = new Uint8Array(CHUNK);
  let size = 0;
  while (true) {
    if (size == data.length) {
      const bigger = new Uint8Array(data.length * 2);
      bigger.set(data);
      data = bigger;
    }
    const n = process.stdin.read(data.buffer, size);
    if (n <= 0) break;
    size += n;
  }
  return data.subarray(0, size);
}

function fail(message: string): void {
  process.stderr.write(message + "\n");
  process.exit(1);
}

// Python's str.isspace(), which str.split() splits on.
function isSpace(cp: u32): bool {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f);
  return (
    cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
    cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000
  );
}

// Counts fed one code point at a time.
class Stats {
  words: i32 = 0;
  chars: i32 = 0;
  bytes: i32 = 0;
  private inWord: bool = false;

  add(cp: u32): void {
    this.chars += 1;
    this.bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (isSpace(cp)) {
      this.inWord = false;
    } else if (!this.inWord) {
      this.inWord = true;
      this.words += 1;
    }
  }

  toJSON(): string {
    return `{"words":${this.words},"chars":${this.chars},"bytes":${this.bytes}}`;
  }
}

// A small JSON reader over the UTF-8 bytes of stdin: enough to find one string member.
class Reader {
  pos: i32 = 0;
  ok: bool = true;
  constructor(private src: Uint8Array) {}

  at(): u32 {
    return this.pos < this.src.length ? <u32>this.src[this.pos] : 0;
  }

  skipSpace(): void {
    while (this.pos < this.src.length) {
      const c = this.at();
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) break;
      this.pos++;
    }
  }

  expect(c: u32): bool {
    this.skipSpace();
    if (this.at() != c) {
      this.ok = false;
      return false;
    }
    this.pos++;
    return true;
  }

  hex4(): u32 {
    let value: u32 = 0;
    for (let i = 0; i < 4; i++) {
      const c = this.at();
      this.pos++;
      let digit: u32;
      if (c >= 0x30 && c <= 0x39) digit = c - 0x30;
      else if (c >= 0x61 && c <= 0x66) digit = c - 0x57;
      else if (c >= 0x41 && c <= 0x46) digit = c - 0x37;
      else {
        this.ok = false;
        return 0;
      }
      value = (value << 4) | digit;
    }
    return value;
  }

  // One UTF-8 sequence starting at pos (already known not to be ASCII).
  utf8(): u32 {
    const lead = this.at();
    const extra: i32 = lead >= 0xf0 ? 3 : lead >= 0xe0 ? 2 : 1;
    let cp: u32 = lead & (extra == 3 ? 0x07 : extra == 2 ? 0x0f : 0x1f);
    this.pos++;
    for (let i = 0; i < extra; i++) {
      cp = (cp << 6) | (this.at() & 0x3f);
      this.pos++;
    }
    return cp;
  }

  // Reads a string; each code point goes to `stats` when given. Returns the string
  // only when `keep` (member names are short; the text itself is never copied).
  string(stats: Stats | null, keep: bool): string {
    let kept = "";
    if (!this.expect(0x22)) return kept;
    let pending: u32 = 0; // a high surrogate waiting for its low half
    while (this.ok) {
      if (this.pos >= this.src.length) {
        this.ok = false;
        break;
      }
      let c = this.at();
      if (c == 0x22) {
        this.pos++;
        break;
      }
      let cp: u32;
      if (c == 0x5c) {
        this.pos++;
        const e = this.at();
        this.pos++;
        if (e == 0x6e) cp = 0x0a;
        else if (e == 0x74) cp = 0x09;
        else if (e == 0x72) cp = 0x0d;
        else if (e == 0x62) cp = 0x08;
        else if (e == 0x66) cp = 0x0c;
        else if (e == 0x75) cp = this.hex4();
        else cp = e; // \" \\ \/
      } else if (c < 0x80) {
        cp = c;
        this.pos++;
      } else {
        cp = this.utf8();
      }
      if (cp >= 0xd800 && cp <= 0xdbff) {
        pending = cp;
        continue;
      }
      if (pending != 0 && cp >= 0xdc00 && cp <= 0xdfff) {
        cp = 0x10000 + ((pending - 0xd800) << 10) + (cp - 0xdc00);
      }
      pending = 0;
      if (stats) stats.add(cp);
      if (keep) kept += String.fromCodePoint(cp);
    }
    return kept;
  }

  // Skips any JSON value.
  skipValue(): void {
    this.skipSpace();
    const c = this.at();
    if (c == 0x22) {
      this.string(null, false);
    } else if (c == 0x7b || c == 0x5b) {
      const close: u32 = c == 0x7b ? 0x7d : 0x5d;
      this.pos++;
      this.skipSpace();
      if (this.at() == close) {
        this.pos++;
        return;
      }
      while (this.ok) {
        if (c == 0x7b) {
          this.string(null, false);
          if (!this.expect(0x3a)) return;
        }
        this.skipValue();
        this.skipSpace();
        if (this.at() == close) {
          this.pos++;
          return;
        }
        if (!this.expect(0x2c)) return;
      }
    } else {
      const start = this.pos; // a number, true, false or null
      while (this.pos < this.src.length) {
        const d = this.at();
        if (d == 0x2c || d == 0x7d || d == 0x5d || d == 0x20 || d == 0x0a || d == 0x0d || d == 0x09) break;
        this.pos++;
      }
      if (this.pos == start) this.ok = false;
    }
  }
}

// The entry point: WASI's `_start`, exported by the shim's config.
const reader = new Reader(readStdin());
const stats = new Stats();
let found = false;
if (reader.expect(0x7b)) {
  reader.skipSpace();
  if (reader.at() == 0x7d) {
    reader.pos++;
  } else {
    while (reader.ok) {
      const key = reader.string(null, true);
      if (!reader.expect(0x3a)) break;
      reader.skipSpace();
      if (key == "text" && reader.at() == 0x22) {
        reader.string(stats, false);
        found = true;
      } else {
        reader.skipValue();
      }
      reader.skipSpace();
      if (reader.at() == 0x7d) {
        reader.pos++;
        break;
      }
      if (!reader.expect(0x2c)) break;
    }
  }
}
if (!reader.ok) {
  fail(`input is not a JSON object (at byte ${reader.pos})`);
} else if (!found) {
  fail('input has no string member "text"');
} else {
  process.stdout.write(stats.toJSON());
}
