// Quickstart for the memos TypeScript client: create two cubes, add one conversation to both,
// search both, then make a call that fails on purpose and decode the google.rpc.Status from the
// `grpc-status-details-bin` trailer.
//
//     npm run build && node dist/examples/quickstart.js --addr 127.0.0.1:50051
//
// Exits non-zero if anything does not go as described.
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";

import { ERROR_DOMAIN, MemosError, connectGateway, fromStatus, unary } from "../src";
import { ChatMessage, Role } from "../src/gen/memos/common/v1/message";
import {
  AddMemoriesRequest,
  CreateCubeRequest,
  ExtractMode,
  SearchMemoriesRequest,
  extractModeToJSON,
  shareRoleToJSON,
} from "../src/gen/memos/gateway/v1/gateway";

function text(role: Role, s: string): ChatMessage {
  return ChatMessage.fromPartial({ role, content: [{ text: { text: s } }] });
}

function oneLine(s: string): string {
  const t = s.split(/\s+/).filter(Boolean).join(" ");
  return t.length > 120 ? `${t.slice(0, 117)}...` : t;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      addr: { type: "string", default: process.env.MEMOS_GATEWAY_ADDR || "127.0.0.1:50051" },
      user: { type: "string", default: "quickstart-user" },
      suffix: { type: "string", default: "" },
      "timeout-ms": { type: "string", default: "60000" },
    },
  });
  const user = values.user!;
  const suffix = values.suffix || randomBytes(4).toString("hex");
  const timeoutMs = Number(values["timeout-ms"]);
  const gw = connectGateway(values.addr!);
  try {
    // 1. Two cubes, owned by the user.
    const cubes = [`travel-${suffix}`, `work-${suffix}`];
    for (const id of cubes) {
      const res = await unary(
        gw,
        gw.createCube,
        CreateCubeRequest.fromPartial({ requestId: `create-${id}`, userId: user, cubeId: id, name: `quickstart ${id}` }),
        timeoutMs,
      );
      console.log(`cube ${res.cube?.cubeId} owner=${res.cube?.ownerId} role=${shareRoleToJSON(res.cube?.myRole ?? 0)}`);
    }

    // 2. One conversation, added to both cubes in one call.
    const added = await unary(
      gw,
      gw.addMemories,
      AddMemoriesRequest.fromPartial({
        requestId: `add-${suffix}`,
        userId: user,
        writableCubeIds: cubes,
        messages: [
          text(Role.ROLE_USER, "I'm going to Shanghai next week. I'll choose 7 Days Inn near the Bund."),
          text(Role.ROLE_ASSISTANT, "Noted: 7 Days Inn near the Bund for your Shanghai trip."),
        ],
        mode: ExtractMode.EXTRACT_MODE_FAST,
      }),
      timeoutMs,
    );
    const perCube = new Map<string, number>();
    for (const m of added.memories) {
      perCube.set(m.cubeId, (perCube.get(m.cubeId) ?? 0) + 1);
    }
    const counts = [...perCube.entries()].sort().map(([k, v]) => `${k}:${v}`).join(" ");
    console.log(`added ${added.memories.length} memories (${counts}) mode=${extractModeToJSON(added.effectiveMode)}`);
    for (const id of cubes) {
      if (!perCube.get(id)) {
        throw new Error(`AddMemories wrote nothing to cube ${id}`);
      }
    }

    // 3. Search both cubes: one bucket per cube, plus one merged ranking.
    const found = await unary(
      gw,
      gw.searchMemories,
      SearchMemoriesRequest.fromPartial({
        userId: user,
        readableCubeIds: cubes,
        query: "Which hotel did I pick in Shanghai?",
        topK: 5,
      }),
      timeoutMs,
    );
    if (found.textMem.length !== cubes.length) {
      throw new Error(`expected ${cubes.length} buckets, got ${found.textMem.length}`);
    }
    for (const bucket of found.textMem) {
      const failed = bucket.status ? fromStatus(bucket.status) : undefined;
      if (failed) {
        throw new Error(`cube ${bucket.cubeId} answered with ${failed.reason}: ${failed.details}`);
      }
      if (bucket.memories.length === 0) {
        throw new Error(`cube ${bucket.cubeId}: no hits`);
      }
      for (const hit of bucket.memories) {
        console.log(
          `hit cube=${bucket.cubeId} score=${hit.score.toFixed(4)} memory=${JSON.stringify(oneLine(hit.item?.memory ?? ""))}`,
        );
      }
    }
    const best = found.ranked[0];
    if (best) {
      console.log(`best cube=${best.item?.metadata?.cubeId} memory=${JSON.stringify(oneLine(best.item?.memory ?? ""))}`);
    }

    // 4. A bad call on purpose: a cube that does not exist. The error's google.rpc.Status
    // carries an ErrorInfo with a stable reason.
    const missing = `no-such-cube-${suffix}`;
    let err: MemosError | undefined;
    try {
      await unary(
        gw,
        gw.searchMemories,
        SearchMemoriesRequest.fromPartial({ userId: user, readableCubeIds: [missing], query: "anything" }),
        timeoutMs,
      );
    } catch (e) {
      if (!(e instanceof MemosError)) {
        throw e;
      }
      err = e;
    }
    if (!err) {
      throw new Error(`searching ${missing} succeeded; expected CUBE_NOT_FOUND`);
    }
    console.log(
      `error code=${err.codeName} reason=${err.reason} domain=${err.domain} retriable=${err.retriable} ` +
        `metadata=${JSON.stringify(err.metadata)} message=${JSON.stringify(err.details)}`,
    );
    if (err.reason !== "CUBE_NOT_FOUND" || err.domain !== ERROR_DOMAIN || err.metadata.cube_id !== missing) {
      throw new Error(`unexpected error details: ${err.message}`);
    }
    console.log("quickstart: ok");
  } finally {
    gw.close();
  }
}

main().catch((e: unknown) => {
  console.error("quickstart failed:", e instanceof Error ? e.message : e);
  process.exit(1);
});
