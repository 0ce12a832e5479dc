/**
 * The one module that talks to libbpf (1.1, through koffi). Everything else
 * in sockmesh sees the typed wrappers exported here. libbpf 1.x returns
 * -errno from int functions and NULL (with errno set) from pointer functions;
 * both become BpfError with the errno kept.
 */
import { createRequire } from 'node:module';
import { closeSync, constants as fsc, openSync, readSync } from 'node:fs';
import { BpfError } from '../errors.js';

const require = createRequire(import.meta.url);
// koffi ships CommonJS with prebuilt binaries; loaded once, here only.
const koffi = require('koffi') as typeof import('koffi');

type Ptr = unknown;

const lib = koffi.load('libbpf.so.1');

const OPAQUE_OBJ = koffi.pointer('bpf_object_p', koffi.opaque('bpf_object'));
const OPAQUE_PROG = koffi.pointer('bpf_program_p', koffi.opaque('bpf_program'));
const OPAQUE_MAP = koffi.pointer('bpf_map_p', koffi.opaque('bpf_map'));
const OPAQUE_LINK = koffi.pointer('bpf_link_p', koffi.opaque('bpf_link'));
const OPAQUE_BTF = koffi.pointer('btf_p', koffi.opaque('btf'));
const OPAQUE_RING = koffi.pointer('ring_buffer_p', koffi.opaque('ring_buffer'));
void OPAQUE_OBJ; void OPAQUE_PROG; void OPAQUE_MAP; void OPAQUE_LINK; void OPAQUE_BTF; void OPAQUE_RING;
/** libbpf's ring_buffer_sample_fn: called once per record during ring_buffer__consume. */
const RING_SAMPLE_FN = koffi.proto('int ring_buffer_sample_fn(void *ctx, void *data, size_t size)');

const c = {
  numPossibleCpus: lib.func('int libbpf_num_possible_cpus()'),
  probeMapType: lib.func('int libbpf_probe_bpf_map_type(int map_type, const void *opts)'),
  probeProgType: lib.func('int libbpf_probe_bpf_prog_type(int prog_type, const void *opts)'),
  objectOpenFile: lib.func('bpf_object_p bpf_object__open_file(const char *path, const void *opts)'),
  objectLoad: lib.func('int bpf_object__load(bpf_object_p obj)'),
  objectClose: lib.func('void bpf_object__close(bpf_object_p obj)'),
  findProgram: lib.func('bpf_program_p bpf_object__find_program_by_name(bpf_object_p obj, const char *name)'),
  findMap: lib.func('bpf_map_p bpf_object__find_map_by_name(bpf_object_p obj, const char *name)'),
  programFd: lib.func('int bpf_program__fd(bpf_program_p prog)'),
  programSetLogBuf: lib.func('int bpf_program__set_log_buf(bpf_program_p prog, void *buf, size_t size)'),
  programSetLogLevel: lib.func('int bpf_program__set_log_level(bpf_program_p prog, uint32_t level)'),
  programAttachCgroup: lib.func('bpf_link_p bpf_program__attach_cgroup(bpf_program_p prog, int cgroup_fd)'),
  mapFd: lib.func('int bpf_map__fd(bpf_map_p map)'),
  linkPin: lib.func('int bpf_link__pin(bpf_link_p link, const char *path)'),
  linkFd: lib.func('int bpf_link__fd(bpf_link_p link)'),
  linkDestroy: lib.func('int bpf_link__destroy(bpf_link_p link)'),
  linkCreate: lib.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts)'),
  progAttach: lib.func('int bpf_prog_attach(int prog_fd, int attachable_fd, int type, unsigned int flags)'),
  objPin: lib.func('int bpf_obj_pin(int fd, const char *pathname)'),
  objGet: lib.func('int bpf_obj_get(const char *pathname)'),
  mapUpdate: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  mapLookup: lib.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
  mapDelete: lib.func('int bpf_map_delete_elem(int fd, const void *key)'),
  mapNextKey: lib.func('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
  objInfoByFd: lib.func('int bpf_obj_get_info_by_fd(int bpf_fd, void *info, _Inout_ uint32_t *info_len)'),
  btfParse: lib.func('btf_p btf__parse(const char *path, void *btf_ext)'),
  btfFree: lib.func('void btf__free(btf_p btf)'),
  btfTypeCnt: lib.func('uint32_t btf__type_cnt(btf_p btf)'),
  btfTypeById: lib.func('const void *btf__type_by_id(btf_p btf, uint32_t id)'),
  btfNameByOffset: lib.func('const char *btf__name_by_offset(btf_p btf, uint32_t offset)'),
  setPrint: lib.func('void *libbpf_set_print(void *fn)'),
  ringBufferNew: lib.func('ring_buffer_p ring_buffer__new(int map_fd, ring_buffer_sample_fn *sample_cb, void *ctx, const void *opts)'),
  ringBufferConsume: lib.func('int ring_buffer__consume(ring_buffer_p rb)'),
  ringBufferFree: lib.func('void ring_buffer__free(ring_buffer_p rb)'),
  iterCreate: lib.func('int bpf_iter_create(int link_fd)'),
};

const libc = koffi.load('libc.so.6');
const cLibc = {
  setns: libc.func('int setns(int fd, int nstype)'),
  ifNameToIndex: libc.func('unsigned int if_nametoindex(const char *ifname)'),
  /** the calling thread's signal mask: blocked while the verifier runs (see BpfObject.load) */
  sigfillset: libc.func('int sigfillset(void *set)'),
  pthreadSigmask: libc.func('int pthread_sigmask(int how, const void *set, void *oldset)'),
};
const SIG_BLOCK = 0;
const SIG_SETMASK = 2;
/** glibc's sigset_t */
const SIGSET_BYTES = 128;

/** The index of a network interface in the calling thread's namespace; 0 when there is none of that name. */
export function ifIndex(name: string): number {
  return cLibc.ifNameToIndex(name);
}
/** CLONE_NEWNET: setns(2) into a network namespace. */
const CLONE_NEWNET = 0x40000000;

/** Constants of the bpf(2) ABI (linux/bpf.h); stable kernel ABI, not sockmesh's own. */
export const BPF = Object.freeze({
  MAP_TYPE_HASH: 1,
  MAP_TYPE_PERCPU_ARRAY: 6,
  MAP_TYPE_LRU_HASH: 9,
  MAP_TYPE_SOCKHASH: 18,
  MAP_TYPE_RINGBUF: 27,
  PROG_TYPE_SOCK_OPS: 13,
  PROG_TYPE_SK_MSG: 16,
  PROG_TYPE_CGROUP_SOCK_ADDR: 18,
  ATTACH_CGROUP_SOCK_OPS: 3,
  ATTACH_SK_MSG_VERDICT: 7,
  ATTACH_TRACE_ITER: 28,
  ATTACH_TCX_INGRESS: 46,
  ANY: 0,
  NOEXIST: 1,
  EXIST: 2,
});

function fail(op: string, ret: number, hint?: string): never {
  const errno = ret < 0 ? -ret : koffi.errno();
  throw new BpfError(op, errno, hint);
}

function check(op: string, ret: number, hint?: string): number {
  if (ret < 0) fail(op, ret, hint);
  return ret;
}

function nonNull<T>(op: string, p: T | null, hint?: string): T {
  if (p === null || p === undefined) fail(op, 0, hint);
  return p as T;
}

/** Number of possible CPUs: the stride of per-CPU map values. */
export function possibleCpus(): number {
  return check('libbpf_num_possible_cpus', c.numPossibleCpus());
}

/** Whether the kernel can create maps of this type (1), cannot (0). */
export function kernelHasMapType(mapType: number): boolean {
  return c.probeMapType(mapType, null) === 1;
}

/** Whether the kernel can load programs of this type. */
export function kernelHasProgType(progType: number): boolean {
  return c.probeProgType(progType, null) === 1;
}

/** Stops libbpf printing to stderr; sockmesh reports errors itself. */
export function silenceLibbpf(): void {
  c.setPrint(null);
}

/** A pinned object's fd (map, program or link). */
export function objGet(path: string): number {
  return check(`bpf_obj_get(${path})`, c.objGet(path));
}

/** Pins an fd at path in bpffs. */
export function objPin(fd: number, path: string): void {
  check(`bpf_obj_pin(${path})`, c.objPin(fd, path));
}

/** Creates a BPF link (kernel-owned attachment) of prog to target. */
export function linkCreate(progFd: number, targetFd: number, attachType: number): number {
  return check('bpf_link_create', c.linkCreate(progFd, targetFd, attachType, null));
}

/**
 * Runs a BPF iterator once: a new iterator of the link, read to its end.
 * The kernel fixes a socket iterator's network namespace to the caller's at
 * this call (see inNetns). Returns what the program printed (sockmesh's
 * print nothing; they act and count).
 */
export function runIterator(linkFd: number): Buffer {
  const fd = check('bpf_iter_create', c.iterCreate(linkFd));
  const chunks: Buffer[] = [];
  try {
    const buf = Buffer.alloc(4096);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(Buffer.from(buf.subarray(0, n)));
    }
  } finally {
    closeSync(fd);
  }
  return Buffer.concat(chunks);
}

/**
 * Runs fn with the calling thread in the network namespace at nsPath
 * (/run/netns/x or /proc/<pid>/ns/net), and moves it back afterwards, also
 * when fn throws. setns(2) changes only this thread, and nothing else runs
 * on it in between: fn must be synchronous (bpf syscalls, no awaits).
 */
export function inNetns<T>(nsPath: string, fn: () => T): T {
  const home = openSync('/proc/thread-self/ns/net', fsc.O_RDONLY);
  try {
    const target = openSync(nsPath, fsc.O_RDONLY);
    try {
      if (cLibc.setns(target, CLONE_NEWNET) !== 0) throw new BpfError(`setns(${nsPath})`, koffi.errno());
    } finally {
      closeSync(target);
    }
    try {
      return fn();
    } finally {
      if (cLibc.setns(home, CLONE_NEWNET) !== 0) {
        // the thread would stay in the pod's namespace: nothing sane can follow
        process.stderr.write(`sockmesh: cannot return to the agent's network namespace (errno ${koffi.errno()}); exiting\n`);
        process.exit(70);
      }
    }
  } finally {
    closeSync(home);
  }
}

/** Legacy attach (no link); the attachment lives as long as the target. */
export function progAttach(progFd: number, targetFd: number, attachType: number): void {
  check('bpf_prog_attach', c.progAttach(progFd, targetFd, attachType, 0));
}

export function mapUpdate(fd: number, key: Buffer, value: Buffer, flags: number = BPF.ANY): void {
  check('bpf_map_update_elem', c.mapUpdate(fd, key, value, flags));
}

/** The value for key, or undefined when it is absent. */
export function mapLookup(fd: number, key: Buffer, valueSize: number): Buffer | undefined {
  const value = Buffer.alloc(valueSize);
  const ret = c.mapLookup(fd, key, value);
  if (ret === -2) return undefined; // ENOENT
  check('bpf_map_lookup_elem', ret);
  return value;
}

/** True when deleted, false when absent. */
export function mapDelete(fd: number, key: Buffer): boolean {
  const ret = c.mapDelete(fd, key);
  if (ret === -2) return false;
  check('bpf_map_delete_elem', ret);
  return true;
}

/** Every key in the map (a snapshot; concurrent writes may be missed). */
export function mapKeys(fd: number, keySize: number): Buffer[] {
  const keys: Buffer[] = [];
  let prev: Buffer | null = null;
  for (;;) {
    const next = Buffer.alloc(keySize);
    const ret = c.mapNextKey(fd, prev, next);
    if (ret === -2) return keys; // ENOENT: no more keys
    check('bpf_map_get_next_key', ret);
    keys.push(next);
    prev = next;
  }
}

/** Fields of struct bpf_map_info that sockmesh reads. */
export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  name: string;
}

export function mapInfo(fd: number): MapInfo {
  // struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16], ...
  const buf = Buffer.alloc(88);
  const len = [buf.length];
  check('bpf_obj_get_info_by_fd(map)', c.objInfoByFd(fd, buf, len));
  const nameRaw = buf.subarray(24, 40);
  const nul = nameRaw.indexOf(0);
  return {
    type: buf.readUInt32LE(0),
    id: buf.readUInt32LE(4),
    keySize: buf.readUInt32LE(8),
    valueSize: buf.readUInt32LE(12),
    maxEntries: buf.readUInt32LE(16),
    name: nameRaw.subarray(0, nul < 0 ? 16 : nul).toString('latin1'),
  };
}

/** Fields of struct bpf_link_info that sockmesh reads. */
export interface LinkInfo {
  type: number;
  id: number;
  progId: number;
  /** cgroup links: the cgroup id (inode number of the cgroup directory). */
  cgroupId: bigint;
}

export function linkInfo(fd: number): LinkInfo {
  // struct bpf_link_info: type u32, id u32, prog_id u32, then a union (8-byte aligned at 16)
  const buf = Buffer.alloc(64);
  const len = [buf.length];
  check('bpf_obj_get_info_by_fd(link)', c.objInfoByFd(fd, buf, len));
  return {
    type: buf.readUInt32LE(0),
    id: buf.readUInt32LE(4),
    progId: buf.readUInt32LE(8),
    cgroupId: buf.readBigUInt64LE(16),
  };
}

/** A program inside an opened object. */
export class BpfProgram {
  readonly name: string;
  readonly #ptr: Ptr;
  #logBuf: Buffer | undefined;
  constructor(name: string, ptr: Ptr) {
    this.name = name;
    this.#ptr = ptr;
  }
  /** Keep the verifier log of the next load in a buffer of this size. */
  captureVerifierLog(bytes: number): void {
    this.#logBuf = Buffer.alloc(bytes);
    check('bpf_program__set_log_buf', c.programSetLogBuf(this.#ptr, this.#logBuf, bytes));
  }
  /** The verifier log captured at load (empty when none was asked for). */
  verifierLog(): string {
    if (!this.#logBuf) return '';
    const end = this.#logBuf.indexOf(0);
    return this.#logBuf.subarray(0, end < 0 ? this.#logBuf.length : end).toString('utf8');
  }
  get fd(): number {
    return check(`bpf_program__fd(${this.name})`, c.programFd(this.#ptr));
  }
  /** Attaches to a cgroup through a BPF link; returns the link. */
  attachCgroup(cgroupFd: number): BpfLink {
    const p = c.programAttachCgroup(this.#ptr, cgroupFd);
    return new BpfLink(nonNull(`bpf_program__attach_cgroup(${this.name})`, p));
  }
}

/**
 * A libbpf ring buffer over one BPF_MAP_TYPE_RINGBUF map, drained from JS:
 * consume() never blocks (no epoll wait on the main thread). Each record is
 * copied into its own Buffer while libbpf holds it, so records outlive the
 * call. The map fd stays the caller's: keep it open until free().
 */
export class RingBuffer {
  #ptr: Ptr;
  #callback: bigint | null;
  #failure: unknown;
  private constructor(ptr: Ptr, callback: bigint) {
    this.#ptr = ptr;
    this.#callback = callback;
  }
  /** Maps the ring of mapFd; onRecord gets each record consume() finds. */
  static open(mapFd: number, onRecord: (record: Buffer) => void): RingBuffer {
    let rb: RingBuffer | undefined;
    // a registered (not transient) callback: libbpf keeps the pointer past ring_buffer__new
    const callback = koffi.register((_ctx: unknown, data: unknown, size: number | bigint): number => {
      try {
        onRecord(Buffer.from(koffi.view(data, Number(size)).slice(0)));
        return 0;
      } catch (err) {
        // an exception must not cross into C: keep it, stop this consume, rethrow there
        if (rb) rb.#failure = err;
        return -4; // -EINTR
      }
    }, koffi.pointer(RING_SAMPLE_FN));
    const p = c.ringBufferNew(mapFd, callback, null, null);
    if (p === null || p === undefined) {
      const errno = koffi.errno();
      koffi.unregister(callback);
      throw new BpfError('ring_buffer__new', errno, 'the map must be a BPF_MAP_TYPE_RINGBUF map this process may read');
    }
    rb = new RingBuffer(p, callback);
    return rb;
  }
  /** Hands every record available now to onRecord; returns how many. */
  consume(): number {
    if (this.#ptr === null) throw new BpfError('ring_buffer__consume', 9 /* EBADF */, 'the ring buffer was freed');
    const ret = c.ringBufferConsume(this.#ptr);
    if (this.#failure !== undefined) {
      const err = this.#failure;
      this.#failure = undefined;
      throw err;
    }
    return check('ring_buffer__consume', ret);
  }
  /** Unmaps the ring and releases the callback. Idempotent. */
  free(): void {
    if (this.#ptr !== null) {
      c.ringBufferFree(this.#ptr);
      this.#ptr = null;
    }
    if (this.#callback !== null) {
      koffi.unregister(this.#callback);
      this.#callback = null;
    }
  }
}

/** A libbpf-owned link. Pin it to let it outlive the process. */
export class BpfLink {
  #ptr: Ptr;
  constructor(ptr: Ptr) {
    this.#ptr = ptr;
  }
  get fd(): number {
    return c.linkFd(this.#ptr);
  }
  pin(path: string): void {
    check(`bpf_link__pin(${path})`, c.linkPin(this.#ptr, path));
  }
  /**
   * Closes this process's fd and frees libbpf's handle. A pinned link stays
   * attached (bpf_link__disconnect would leak the fd: destroy then skips close).
   */
  release(): void {
    if (this.#ptr === null) return;
    c.linkDestroy(this.#ptr);
    this.#ptr = null;
  }
}

/** An opened (and, after load(), loaded) BPF object file. */
export class BpfObject {
  readonly path: string;
  #ptr: Ptr;
  private constructor(path: string, ptr: Ptr) {
    this.path = path;
    this.#ptr = ptr;
  }
  static open(path: string): BpfObject {
    const p = c.objectOpenFile(path, null);
    return new BpfObject(path, nonNull(`bpf_object__open_file(${path})`, p, 'build the BPF object first: make bpf'));
  }
  program(name: string): BpfProgram {
    const p = c.findProgram(this.#ptr, name);
    return new BpfProgram(name, nonNull(`find program ${name} in ${this.path}`, p));
  }
  mapFd(name: string): number {
    const m = nonNull(`find map ${name} in ${this.path}`, c.findMap(this.#ptr, name));
    return check(`bpf_map__fd(${name})`, c.mapFd(m));
  }
  /**
   * Loads every program and creates every map; returns the raw result.
   * Signals to this thread wait until the load is done: the verifier stops
   * with EAGAIN when one is pending, and libbpf's five tries do not outlast
   * a process signalled every few hundred microseconds (a CPU profiler's
   * SIGPROF). Signals for the process go to its other threads meanwhile.
   */
  load(): number {
    const all = Buffer.alloc(SIGSET_BYTES);
    const old = Buffer.alloc(SIGSET_BYTES);
    cLibc.sigfillset(all);
    const masked = cLibc.pthreadSigmask(SIG_BLOCK, all, old) === 0;
    try {
      return c.objectLoad(this.#ptr);
    } finally {
      if (masked) cLibc.pthreadSigmask(SIG_SETMASK, old, null);
    }
  }
  close(): void {
    if (this.#ptr === null) return;
    c.objectClose(this.#ptr);
    this.#ptr = null;
  }
}

// ---- BTF, read into plain data once --------------------------------------

export interface BtfMember { name: string; bitOffset: number; typeId: number }
export interface BtfStruct { name: string; size: number; members: BtfMember[] }
export interface BtfEnum { name: string; size: number; values: Map<string, number> }

/** The parts of a BTF blob sockmesh checks its layouts against. */
export interface BtfTypes {
  structs: Map<string, BtfStruct>;
  enums: Map<string, BtfEnum>;
}

const KIND_STRUCT = 4;
const KIND_ENUM = 6;

function readBtf(btf: Ptr): BtfTypes {
  const out: BtfTypes = { structs: new Map(), enums: new Map() };
  const name = (off: number): string => c.btfNameByOffset(btf, off) ?? '';
  const count = c.btfTypeCnt(btf);
  for (let id = 1; id < count; id++) {
    const t = c.btfTypeById(btf, id);
    const nameOff = koffi.decode(t, 0, 'uint32_t') as number;
    const info = koffi.decode(t, 4, 'uint32_t') as number;
    const size = koffi.decode(t, 8, 'uint32_t') as number;
    const kind = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    const kflag = info >>> 31;
    if (kind === KIND_STRUCT) {
      const members: BtfMember[] = [];
      for (let i = 0; i < vlen; i++) {
        const base = 12 + i * 12;
        const off = koffi.decode(t, base + 8, 'uint32_t') as number;
        members.push({
          name: name(koffi.decode(t, base, 'uint32_t') as number),
          typeId: koffi.decode(t, base + 4, 'uint32_t') as number,
          bitOffset: kflag ? off & 0xffffff : off,
        });
      }
      const n = name(nameOff);
      if (n) out.structs.set(n, { name: n, size, members });
    } else if (kind === KIND_ENUM) {
      const values = new Map<string, number>();
      for (let i = 0; i < vlen; i++) {
        const base = 12 + i * 8;
        values.set(name(koffi.decode(t, base, 'uint32_t') as number), koffi.decode(t, base + 4, 'int32_t') as number);
      }
      const n = name(nameOff);
      if (n) out.enums.set(n, { name: n, size, values });
    }
  }
  return out;
}

/** Reads the BTF of an ELF object file without opening it as a BPF object. */
export function btfOfFile(path: string): BtfTypes {
  const b = nonNull(`btf__parse(${path})`, c.btfParse(path, null), 'build the BPF object first: make bpf');
  try {
    return readBtf(b);
  } finally {
    c.btfFree(b);
  }
}
