/**
 * e2e suite `typescript-client` (tests/e2e/typescript/suite.sh, run by tests/e2e/run.sh): a
 * TypeScript caller of the gateway, typed by what openapi-typescript generates from the live
 * /openapi.json and calling through openapi-fetch.
 *
 * `./schema.js` is that generated schema.d.ts: suite.sh writes it into a scratch directory that
 * tsconfig's rootDirs merges with this one. tsc (strict) checks this file against it, so a document
 * that describes an operation, a parameter or a field differently from how a TypeScript caller uses
 * it here fails the build; node then runs the compiled file against the gateway, so a document whose
 * answers the gateway does not give fails at run time.
 *
 * Environment (set by tests/e2e/run.sh): GATEWAY_URL, GATEWAY_KEY (a key with the admin scope).
 * Prints one `ok` line per check; the first failed check prints `FAIL ...` and exits 1.
 */
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

// The little of Node's `process` used here (no @types/node dependency).
declare const process: {
  readonly env: Readonly<Record<string, string | undefined>>;
  exitCode?: number | undefined;
};

type Schemas = components["schemas"];
type Channel = Schemas["Channel"];
type ChannelKind = Schemas["ChannelKind"];
type Post = Schemas["Post"];
type Problem = Schemas["Problem"];
type ProblemCode = Schemas["ProblemCode"];

// ---------------------------------------------------------------- compile-time contract
// What this caller relies on, stated as types: if the document changes any of it, tsc fails.
type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** Compiles only when T is `true`. */
function staticAssert<T extends true>(_proof?: T): void {}
/** The declared (not index-signature) keys of a generated headers object. */
type DeclaredKeys<T> = keyof { [K in keyof T as string extends K ? never : number extends K ? never : K]: T[K] };

staticAssert<Equals<Channel["channel_id"], number>>();
staticAssert<Equals<Channel["name"], string>>();
staticAssert<Equals<Channel["members"], number[]>>();
staticAssert<Equals<Post["post_id"], number>>();
staticAssert<Equals<Post["channel_id"], number>>();
staticAssert<Equals<Post["message"], string>>();
staticAssert<Equals<Problem["status"], number>>();
staticAssert<Equals<Problem["code"], ProblemCode>>();
staticAssert<Equals<Problem["detail"], string>>();
// request_id is documented as optional and nullable.
staticAssert<Equals<Problem["request_id"], string | null | undefined>>();
// The body of a create_post request is exactly NewPostBody (message required, thread_id optional).
staticAssert<
  Equals<
    paths["/api/v1/channels/{channel_id}/posts"]["post"]["requestBody"]["content"]["application/json"],
    Schemas["NewPostBody"]
  >
>();

type CreatePost = paths["/api/v1/channels/{channel_id}/posts"]["post"];
type GetChannel = paths["/api/v1/channels/{channel_id}"]["get"];
type ListPosts = paths["/api/v1/channels/{channel_id}/posts"]["get"];
// Headers this client reads, each declared on the answer it reads it from.
const IDEMPOTENCY_KEY = "Idempotency-Key" satisfies keyof NonNullable<CreatePost["parameters"]["header"]>;
const REPLAYED = "Idempotent-Replayed" satisfies DeclaredKeys<CreatePost["responses"][201]["headers"]>;
const REQUEST_ID_404 = "X-Request-Id" satisfies DeclaredKeys<GetChannel["responses"][404]["headers"]>;
const REQUEST_ID_400 = "X-Request-Id" satisfies DeclaredKeys<ListPosts["responses"][400]["headers"]>;
// Error answers are problem documents, under application/problem+json.
staticAssert<Equals<GetChannel["responses"][404]["content"]["application/problem+json"], Problem>>();
staticAssert<Equals<ListPosts["responses"][400]["content"]["application/problem+json"], Problem>>();
// The codes checked below are documented ones.
const NOT_FOUND = "not_found" satisfies ProblemCode;
const INVALID_REQUEST = "invalid_request" satisfies ProblemCode;
// Named channel kinds this client posts to.
const NAMED_KINDS = ["public", "private"] as const satisfies readonly ChannelKind[];

const BASE = (process.env["GATEWAY_URL"] ?? "").replace(/\/+$/, "");
const KEY = process.env["GATEWAY_KEY"] ?? "";
const api = createClient<paths>({ baseUrl: BASE, headers: { Authorization: `Bearer ${KEY}` } });

/**
 * Calls that must NOT compile: each line is a mistake the generated types must catch. If the
 * document loosened a type (a string where a number is meant, an optional required field), the
 * `@ts-expect-error` above it would be unused and tsc fails. Never called.
 */
export async function mistakesTheTypesCatch(): Promise<void> {
  // @ts-expect-error limit is an integer, not a string
  await api.GET("/api/v1/channels/{channel_id}/posts", { params: { path: { channel_id: 1 }, query: { limit: "50" } } });
  // @ts-expect-error channel_id is a required path parameter
  await api.GET("/api/v1/channels/{channel_id}/posts", { params: { path: {} } });
  // @ts-expect-error a post needs a message
  await api.POST("/api/v1/channels/{channel_id}/posts", { params: { path: { channel_id: 1 } }, body: {} });
  // @ts-expect-error a message is a string
  await api.POST("/api/v1/channels/{channel_id}/posts", { params: { path: { channel_id: 1 } }, body: { message: 1 } });
  // An unknown field is caught in a NewPostBody value, but not in a body written inline in the call:
  // openapi-fetch infers its init argument as a generic, and TypeScript does no excess-property
  // check there, whatever additionalProperties says.
  // @ts-expect-error NewPostBody has additionalProperties: false
  const extra: Schemas["NewPostBody"] = { message: "x", text: "x" };
  void extra;
  // @ts-expect-error no such path
  await api.GET("/api/v1/channel");
  const { data } = await api.GET("/api/v1/channels");
  // @ts-expect-error a channel's name is a string
  const wrong: number | undefined = data?.items[0]?.name;
  void wrong;
}

// ---------------------------------------------------------------- run-time checks
class CheckFailed extends Error {}

function check(condition: unknown, what: string, got?: unknown): asserts condition {
  if (!condition) {
    throw new CheckFailed(got === undefined ? what : `${what}; got: ${show(got)}`);
  }
}

function show(value: unknown): string {
  try {
    const text = JSON.stringify(value);
    return text.length > 600 ? `${text.slice(0, 600)}…` : text;
  } catch {
    return String(value);
  }
}

/** An answer as a failure message shows it: status and body. */
function answer(result: { response: Response; data?: unknown; error?: unknown }): { status: number; body: unknown } {
  return { status: result.response.status, body: result.error ?? result.data };
}

let checks = 0;
function ok(what: string): void {
  checks += 1;
  console.log(`ok ${checks} - ${what}`);
}

/** A problem answer: its status, its content type, its body read through the generated error type. */
function checkProblem(
  what: string,
  response: Response,
  error: Problem | undefined,
  data: unknown,
  status: number,
  code: ProblemCode,
  requestIdHeader: string,
): void {
  check(response.status === status, `${what}: expected HTTP ${status}`, { status: response.status, body: error ?? data });
  check(data === undefined && error !== undefined, `${what}: openapi-fetch should give an error, not data`, { data, error });
  const contentType = response.headers.get("content-type") ?? "";
  check(contentType.startsWith("application/problem+json"), `${what}: content type`, contentType);
  // The generated error type is the Problem schema: these fields are typed, not `any`.
  const problemCode: ProblemCode = error.code;
  const problemStatus: number = error.status;
  const requestId: string | null | undefined = error.request_id;
  check(problemCode === code, `${what}: problem code`, error);
  check(problemStatus === status, `${what}: problem status`, error);
  check(typeof error.title === "string" && typeof error.detail === "string", `${what}: title and detail`, error);
  check(error.type === `urn:syno-chat-gateway:problem:${code}`, `${what}: problem type URI`, error);
  check(typeof requestId === "string" && requestId.length > 0, `${what}: request_id`, error);
  check(requestId === response.headers.get(requestIdHeader), `${what}: request_id matches ${requestIdHeader}`, {
    body: requestId,
    header: response.headers.get(requestIdHeader),
  });
}

function checkChannel(channel: Channel): void {
  check(Number.isSafeInteger(channel.channel_id) && channel.channel_id >= 1, "channel_id is a positive integer", channel);
  check(typeof channel.name === "string", "channel name is a string", channel);
  check(Array.isArray(channel.members) && channel.members.every(Number.isSafeInteger), "members are user ids", channel);
}

function checkPost(post: Post, channelId: number, message: string): void {
  check(Number.isSafeInteger(post.post_id) && post.post_id > 2 ** 32, "post_id is (channel_id << 32) | sequence", post);
  check(post.channel_id === channelId, "post.channel_id", post);
  check(post.message === message, "post.message is the text sent, byte for byte", { sent: message, post });
  check(typeof post.create_at === "number" && typeof post.thread_id === "number", "create_at, thread_id", post);
}

async function main(): Promise<void> {
  check(BASE !== "" && KEY !== "", "GATEWAY_URL and GATEWAY_KEY must be set: run this through `bash tests/e2e/run.sh`");

  // 1. list_channels: typed answer, a known channel of the demo simulator.
  const listed = await api.GET("/api/v1/channels");
  check(listed.response.status === 200 && listed.data !== undefined, "list_channels: expected HTTP 200", answer(listed));
  const channels: Channel[] = listed.data.items;
  channels.forEach(checkChannel);
  const general = channels.find((c) => c.name === "general");
  check(general !== undefined, "list_channels: the demo simulator's `general` is listed", channels.map((c) => c.name));
  const kind: ChannelKind = general.type;
  check((NAMED_KINDS as readonly ChannelKind[]).includes(kind), "`general` is a named channel", general);
  const channelId = general.channel_id;
  ok(`list_channels: ${channels.length} channels, \`general\` is ${channelId}`);

  // 2. A typed query: list_channels?name= (ignoring case).
  const byName = await api.GET("/api/v1/channels", { params: { query: { name: "GENERAL" } } });
  check(byName.response.status === 200 && byName.data !== undefined, "list_channels?name=GENERAL: expected HTTP 200", answer(byName));
  check(
    byName.data.items.length >= 1 && byName.data.items.every((c) => c.name.toLowerCase() === "general"),
    "list_channels?name=GENERAL: only `general`",
    byName.data.items.map((c) => c.name),
  );
  check(byName.data.items.some((c) => c.channel_id === channelId), "list_channels?name=GENERAL has `general`");
  ok("list_channels with a typed query (name=GENERAL) answers only `general`");

  // 3. create_post with an Idempotency-Key, then read it back.
  const marker = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  const message = `TypeScript e2e ${marker}: 100% & done + "quoted" ü ✓ 🚀\nline2`;
  const idempotencyKey = `e2e-ts-${marker}`;
  const send = () =>
    api.POST("/api/v1/channels/{channel_id}/posts", {
      params: { path: { channel_id: channelId }, header: { [IDEMPOTENCY_KEY]: idempotencyKey } },
      body: { message },
    });
  const first = await send();
  check(first.response.status === 201 && first.data !== undefined, "create_post: expected HTTP 201", answer(first));
  // 201 carries a Post, 202 a DeliveryAccepted: told apart by their fields, as a caller would.
  check("post_id" in first.data, "create_post: the 201 body is a Post", first.data);
  const post: Post = first.data;
  checkPost(post, channelId, message);
  check(first.response.headers.get(REPLAYED) !== "true", `create_post: a first request is not ${REPLAYED}`);
  ok(`create_post with ${IDEMPOTENCY_KEY}: post ${post.post_id}`);

  const readBack = async (): Promise<Post[]> => {
    const page = await api.GET("/api/v1/channels/{channel_id}/posts", {
      params: { path: { channel_id: channelId }, query: { limit: 50 } },
    });
    check(page.response.status === 200 && page.data !== undefined, "list_posts: expected HTTP 200", answer(page));
    check(page.data.items.length <= 50, "list_posts?limit=50: at most 50 posts", page.data.items.length);
    return page.data.items.filter((p) => p.message === message);
  };
  const mine = await readBack();
  const listedPost = mine[0];
  check(mine.length === 1 && listedPost !== undefined, "list_posts?limit=50 has the post, once", mine);
  check(listedPost.post_id === post.post_id, "list_posts?limit=50: the same post_id", { created: post, listed: listedPost });
  checkPost(listedPost, channelId, message);
  ok("list_posts (typed query limit=50) has the post with its text byte for byte");

  // 4. The same request again: the kept answer, not a second post.
  const again = await send();
  check(again.response.status === 201 && again.data !== undefined, "create_post again: expected HTTP 201", answer(again));
  check(again.response.headers.get(REPLAYED) === "true", `create_post again: ${REPLAYED}: true`, {
    [REPLAYED]: again.response.headers.get(REPLAYED),
  });
  check(JSON.stringify(again.data) === JSON.stringify(first.data), "create_post again: the same answer", {
    first: first.data,
    again: again.data,
  });
  check((await readBack()).length === 1, "create_post again: still one post with the text");
  ok(`create_post again with the same ${IDEMPOTENCY_KEY}: ${REPLAYED}: true, the same answer, no second post`);

  // 5. A 404 and a 400, read through the generated error type (Problem).
  const missing = await api.GET("/api/v1/channels/{channel_id}", { params: { path: { channel_id: 2_000_000_000 } } });
  checkProblem("get_channel 2000000000", missing.response, missing.error, missing.data, 404, NOT_FOUND, REQUEST_ID_404);
  ok(`get_channel of a missing channel: 404 ${NOT_FOUND}, request_id = ${REQUEST_ID_404}`);

  // limit is typed as a number, so 500 compiles; the document's maximum (200) is checked at run time.
  const tooMany = await api.GET("/api/v1/channels/{channel_id}/posts", {
    params: { path: { channel_id: channelId }, query: { limit: 500 } },
  });
  checkProblem("list_posts?limit=500", tooMany.response, tooMany.error, tooMany.data, 400, INVALID_REQUEST, REQUEST_ID_400);
  ok(`list_posts?limit=500: 400 ${INVALID_REQUEST}, request_id = ${REQUEST_ID_400}`);
}

try {
  await main();
  console.log(`typescript-client: all ${checks} checks passed against ${BASE}`);
} catch (error: unknown) {
  const reason = error instanceof CheckFailed ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error);
  console.log(`FAIL after ${checks} passed checks: ${reason}`);
  process.exitCode = 1;
}
