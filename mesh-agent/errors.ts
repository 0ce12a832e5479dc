/**
 * Errors with stable codes. Every error sockmesh raises on purpose is a
 * SockmeshError; `code` is stable across releases and listed in
 * docs/errors.md (a test checks the two agree).
 */
export class SockmeshError extends Error {
  readonly code: string;
  /** What the user can do about it, one sentence; printed by the CLI. */
  readonly hint: string | undefined;
  constructor(code: string, message: string, hint?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.hint = hint;
  }
}

/** Missing root or the capabilities the datapath needs. */
export class NotPrivilegedError extends SockmeshError {
  constructor(message: string, hint: string) {
    super('SOCKMESH_NOT_PRIVILEGED', message, hint);
  }
}

/** No cgroup v2 hierarchy is mounted. */
export class NoCgroup2Error extends SockmeshError {
  constructor(message: string, hint: string) {
    super('SOCKMESH_NO_CGROUP2', message, hint);
  }
}

/** bpffs is not mounted where the pins live, and could not be mounted. */
export class NoBpffsError extends SockmeshError {
  constructor(message: string, hint: string) {
    super('SOCKMESH_NO_BPFFS', message, hint);
  }
}

/** The running kernel lacks sockmap/sk_msg or cgroup BPF. */
export class KernelUnsupportedError extends SockmeshError {
  constructor(message: string, hint: string) {
    super('SOCKMESH_KERNEL_UNSUPPORTED', message, hint);
  }
}

/** The verifier rejected a program; `verifierLog` holds its log. */
export class VerifierRejectedError extends SockmeshError {
  readonly program: string;
  readonly verifierLog: string;
  readonly errno: number;
  constructor(program: string, errno: number, verifierLog: string) {
    super(
      'SOCKMESH_VERIFIER_REJECTED',
      `the kernel verifier rejected BPF program ${program} (errno ${errno})`,
      'the verifier log below says which instruction failed; rebuild bpf/ with the matching headers (make bpf)',
    );
    this.program = program;
    this.verifierLog = verifierLog;
    this.errno = errno;
  }
}

/** A libbpf or bpf(2) call failed; keeps the errno. */
export class BpfError extends SockmeshError {
  readonly errno: number;
  readonly op: string;
  constructor(op: string, errno: number, hint?: string) {
    super('SOCKMESH_BPF', `${op} failed: ${errnoName(errno)} (errno ${errno})`, hint);
    this.errno = errno;
    this.op = op;
  }
}

/** The compiled object disagrees with what the agent expects of it. */
export class LayoutMismatchError extends SockmeshError {
  constructor(message: string) {
    super('SOCKMESH_LAYOUT_MISMATCH', message, 'rebuild the BPF object and the agent from the same checkout (make build)');
  }
}

/** Pins exist but were made by a sockmesh with another map layout. */
export class PinMismatchError extends SockmeshError {
  constructor(message: string, hint: string) {
    super('SOCKMESH_PIN_MISMATCH', message, hint);
  }
}

/** An operation needs the datapath, and it is not up. */
export class NotUpError extends SockmeshError {
  constructor(pinDir: string) {
    super('SOCKMESH_NOT_UP', `the datapath is not up (nothing pinned under ${pinDir})`, 'run `mesh-agent up` first');
  }
}

/** Bad input from the user: a flag, an address, a name. */
export class InvalidArgumentError extends SockmeshError {
  constructor(message: string, hint?: string) {
    super('SOCKMESH_INVALID_ARGUMENT', message, hint);
  }
}

/** The local node runtime could not create, run or remove a pod. */
export class RuntimeError extends SockmeshError {
  constructor(message: string, hint?: string, options?: { cause?: unknown }) {
    super('SOCKMESH_RUNTIME', message, hint, options);
  }
}

/** A command needs the running agent, and none answers on its admin socket. */
export class AgentNotRunningError extends SockmeshError {
  constructor(socketPath: string) {
    super('SOCKMESH_AGENT_NOT_RUNNING', `no agent answers on ${socketPath}`, 'start it with `mesh-agent run` (or pass the socket it uses with --admin-socket)');
  }
}

/** Another agent already serves the admin socket. */
export class AgentRunningError extends SockmeshError {
  constructor(socketPath: string) {
    super('SOCKMESH_AGENT_RUNNING', `another agent is running: it answers on ${socketPath}`, 'stop it first (SIGTERM), or give this one another --admin-socket');
  }
}

/** Something asked for by name does not exist (a node, a resource). */
export class NotFoundError extends SockmeshError {
  constructor(message: string, hint?: string) {
    super('SOCKMESH_NOT_FOUND', message, hint);
  }
}

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 3: 'ESRCH', 4: 'EINTR', 5: 'EIO', 7: 'E2BIG', 9: 'EBADF', 11: 'EAGAIN',
  12: 'ENOMEM', 13: 'EACCES', 14: 'EFAULT', 16: 'EBUSY', 17: 'EEXIST', 19: 'ENODEV', 20: 'ENOTDIR',
  22: 'EINVAL', 24: 'EMFILE', 28: 'ENOSPC', 95: 'EOPNOTSUPP', 524: 'ENOTSUPP',
};

/** "EPERM" for 1, "errno 999" for what the table lacks. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}
