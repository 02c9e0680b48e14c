// The memos TypeScript client: generated @grpc/grpc-js stubs plus a few helpers.
import {
  credentials,
  Metadata,
  type CallOptions,
  type ChannelCredentials,
  type ClientUnaryCall,
  type ServiceError,
} from "@grpc/grpc-js";

import { toMemosError } from "./errors";
import { GatewayServiceClient } from "./gen/memos/gateway/v1/gateway";

export * from "./errors";
export * as gateway from "./gen/memos/gateway/v1/gateway";
export * as message from "./gen/memos/common/v1/message";
export * as memory from "./gen/memos/common/v1/memory";
export { GatewayServiceClient };

/** A gateway client; plaintext unless `creds` says otherwise. */
export function connectGateway(
  address: string,
  creds: ChannelCredentials = credentials.createInsecure(),
): GatewayServiceClient {
  return new GatewayServiceClient(address, creds);
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/**
 * Calls a unary method of a generated client as a promise with a deadline. A failure rejects
 * with a MemosError carrying the ErrorInfo reason:
 *
 *     const res = await unary(client, client.searchMemories, SearchMemoriesRequest.fromPartial({...}));
 */
export function unary<Req, Res>(
  client: object,
  method: UnaryMethod<Req, Res>,
  request: Req,
  timeoutMs = 30_000,
  metadata: Metadata = new Metadata(),
): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    method.call(client, request, metadata, { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) {
        reject(toMemosError(err));
      } else {
        resolve(res);
      }
    });
  });
}
