// Decoding of memos errors: every failed call is a gRPC status whose google.rpc.Status (in the
// `grpc-status-details-bin` trailer) carries one google.rpc.ErrorInfo with a stable reason.
import { Metadata, status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";

import { ErrorInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";

/** The ErrorInfo domain of every error memos reports. */
export const ERROR_DOMAIN = "memos.dev";
const DETAILS_KEY = "grpc-status-details-bin";
const ERROR_INFO_TYPE = "google.rpc.ErrorInfo";

/** A failed call as memos reports it. */
export class MemosError extends Error {
  constructor(
    /** The gRPC status code, e.g. 5. */
    readonly code: number,
    /** The code's name, e.g. NOT_FOUND. */
    readonly codeName: string,
    /** Stable and machine-readable, e.g. CUBE_NOT_FOUND; the code's name when the peer sent no ErrorInfo. */
    readonly reason: string,
    readonly domain: string,
    /** Names the offending field or cube; "retriable" is taken out into `retriable`. */
    readonly metadata: Record<string, string>,
    readonly retriable: boolean,
    message: string,
  ) {
    super(`memos: ${reason} (${codeName}): ${message}`);
    this.name = "MemosError";
  }

  /** The error's message as the server wrote it (without the reason prefix). */
  get details(): string {
    return this.message.replace(/^memos: \S+ \(\S+\): /, "");
  }
}

function codeName(code: number): string {
  return (GrpcStatus as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

/** Decodes a google.rpc.Status (a trailer's, or one carried in a response such as a search bucket's). */
export function fromStatus(st: Status): MemosError | undefined {
  if (st.code === GrpcStatus.OK) {
    return undefined;
  }
  let reason = codeName(st.code);
  let domain = "";
  const metadata: Record<string, string> = {};
  let retriable = st.code === GrpcStatus.UNAVAILABLE;
  for (const detail of st.details) {
    if (detail.typeUrl.slice(detail.typeUrl.lastIndexOf("/") + 1) !== ERROR_INFO_TYPE) {
      continue;
    }
    const info = ErrorInfo.decode(detail.value);
    reason = info.reason || reason;
    domain = info.domain;
    for (const [k, v] of Object.entries(info.metadata)) {
      if (k === "retriable") {
        retriable = v === "true";
      } else {
        metadata[k] = v;
      }
    }
    break;
  }
  return new MemosError(st.code, codeName(st.code), reason, domain, metadata, retriable, st.message);
}

/** Turns an error from a generated client's callback into a MemosError (reading the status trailer). */
export function toMemosError(err: ServiceError | Error): MemosError {
  if (err instanceof MemosError) {
    return err;
  }
  const se = err as Partial<ServiceError>;
  const code = typeof se.code === "number" ? se.code : GrpcStatus.UNKNOWN;
  const message = se.details ?? err.message;
  const raw = se.metadata instanceof Metadata ? se.metadata.get(DETAILS_KEY) : [];
  if (raw.length > 0) {
    try {
      const st = Status.decode(raw[0] as Buffer);
      const decoded = fromStatus({ ...st, code: st.code || code, message: st.message || message });
      if (decoded) {
        return decoded;
      }
    } catch {
      // A malformed trailer is treated as absent.
    }
  }
  return new MemosError(code, codeName(code), codeName(code), "", {}, code === GrpcStatus.UNAVAILABLE, message);
}
