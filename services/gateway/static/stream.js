// One streamed chat answer: POST /v1/chat/completions read as SSE from fetch's body stream,
// resumed after a cut with GET /v1/streams/{id} and Last-Event-ID.
//
// Why fetch and not EventSource: EventSource cannot POST a body nor send an Authorization
// header, and its automatic reconnect would re-send the request instead of resuming it.

/** An HTTP error answer, in OpenAI's error shape. */
export class HttpError extends Error {
  constructor(status, message, code, retryAfterS) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS; // seconds, or null
  }
}

/**
 * An error inside the stream (`data: {"error": ...}`), or a reconnect that gave up. `final`:
 * the answer ended with it for good (a failed response), whatever its code says.
 */
export class StreamError extends Error {
  constructor(code, message, { final = false } = {}) {
    super(message);
    this.name = "StreamError";
    this.code = code;
    this.final = final;
  }
}

// Errors after which the same request can be resumed from the last event id; the gateway
// says so in their messages. Any other stream error ends the answer.
const RESUMABLE = new Set(["slow_consumer", "stream_timeout", "server_shutting_down"]);
const MAX_RECONNECTS = 8; // ~25 s of backoff in all: longer than a Wi-Fi hand-over
const BACKOFF_BASE_MS = 300;
const BACKOFF_CAP_MS = 5000;

/** Frames `{id, data}` of an SSE body; `id` is null when the frame has none (`event:` is
 * not kept: the Responses API's events name their type in their JSON too). */
export async function* sseFrames(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let id = null;
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // a frame without its blank line was cut off: it was never shown
      let text = buffer + value;
      // A trailing CR may be the first half of CRLF: keep it until the next chunk.
      let tail = "";
      if (text.endsWith("\r")) {
        tail = "\r";
        text = text.slice(0, -1);
      }
      const lines = text.split(/\r\n|\r|\n/);
      buffer = lines.pop() + tail;
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield { id, data: data.join("\n") };
          id = null;
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the server's keep-alive ping
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "id") id = value;
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // frees the connection when the caller stops early
  }
}

export function authHeaders(apiKey) {
  return apiKey ? { authorization: `Bearer ${apiKey}` } : {};
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date), or null. */
function retryAfter(header) {
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(header);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

export async function httpError(response) {
  let message = response.statusText || `HTTP ${response.status}`;
  let code = null;
  try {
    const body = await response.json();
    message = body?.error?.message || message;
    code = body?.error?.code ?? null;
  } catch {
    // not JSON (a proxy's error page): the status says enough
  }
  return new HttpError(response.status, message, code, retryAfter(response.headers.get("retry-after")));
}

/** Wait `ms`, or reject at once when `signal` aborts (Stop during a backoff). */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** A reconnect's wait before `attempt` (1, 2, ...): doubling, capped, with jitter. */
export function backoffMs(attempt) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1));
  return Math.round(ceiling * (0.5 + Math.random() / 2)); // jitter: clients cut together retry apart
}

/**
 * The chat request for `messages` ([{role, content}]: the whole history, or only the new turn
 * of a server-side conversation), with the `extra` request fields.
 */
export function chatBody({ extra, model, messages }) {
  return {
    ...extra, // never one of the page's own fields below (extras.js refuses those)
    model,
    messages: messages.map(({ role, content }) => ({ role, content })),
    stream: true,
    stream_options: { include_usage: true },
  };
}

/**
 * Stream one answer. `on` receives: response({requestId, route, model, score, reason}),
 * cancelable(cancel), delta(text), reasoning(text), refusal(text), toolCall(piece),
 * model(name), finish(reason), usage(usage), connectionLost(attempt, delayMs), reconnected().
 * `cancel()` asks the gateway to stop generating (a fetch's promise); `piece` is one entry of
 * OpenAI's streamed `delta.tool_calls`: {index, id?, type?, function: {name?, arguments}};
 * `usage` has chat's names (prompt_tokens, completion_tokens, total_tokens). `conversation`:
 * the id of the server-side conversation the answer continues (`body` has only the new turn).
 * Resolves at `[DONE]`; rejects with HttpError (before or on resume), StreamError, a
 * TypeError (gateway unreachable) or the signal's AbortError. responses.js streams through
 * the Responses API onto the same `on`.
 */
export async function streamChat({ body, apiKey, conversation = null, signal, on }) {
  const sent = { "content-type": "application/json", accept: "text/event-stream", ...authHeaders(apiKey) };
  // The gateway puts the conversation's history before `body.messages`, and appends the new
  // turn when the answer ends (docs/conversations.md).
  if (conversation) sent["x-tokenbus-conversation-id"] = conversation;
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: sent,
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await httpError(response);
  const headers = response.headers;
  const requestId = headers.get("x-request-id");
  on.response?.({
    requestId,
    route: headers.get("x-tokenbus-route"),
    model: headers.get("x-tokenbus-model"),
    score: headers.get("x-tokenbus-route-score"),
    reason: headers.get("x-tokenbus-route-reason"),
  });
  on.cancelable?.(() => cancelStream(requestId, apiKey));
  signal.throwIfAborted(); // Stop may have been pressed while the request was queued

  const state = { lastId: null, model: headers.get("x-tokenbus-model") };
  const resume = () => {
    const resumeHeaders = { accept: "text/event-stream", ...authHeaders(apiKey) };
    if (state.lastId !== null) resumeHeaders["last-event-id"] = String(state.lastId);
    return fetch(`/v1/streams/${encodeURIComponent(requestId)}`, { headers: resumeHeaders, signal });
  };
  await readResuming({ response, read: (r) => consume(r, state, on), resume, signal, on });
}

/**
 * Read `response` with `read` (resolves true once the stream is whole); after a network cut
 * or a resumable stream error, read on from `resume()`, a fetch that continues the stream
 * after the last event shown. Shared by both APIs.
 */
export async function readResuming({ response, read, resume, signal, on }) {
  for (let current = response; ; current = await reconnect(resume, signal, on)) {
    try {
      if (await read(current)) return;
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      const resumable = err instanceof StreamError && !err.final && RESUMABLE.has(err.code);
      if (!(err instanceof TypeError) && !resumable) throw err;
      // a network error mid-body, or a resumable stream error: resume
    }
  }
}

/** Hand the frames of one response to `on`; resolves when it ends: true at [DONE]. */
async function consume(response, state, on) {
  for await (const frame of sseFrames(response.body)) {
    const id = frame.id === null ? null : Number(frame.id);
    // The gateway sends only frames after Last-Event-ID; this guard keeps a duplicate from
    // ever reaching the screen even if a proxy replays.
    if (id !== null && state.lastId !== null && id <= state.lastId) continue;
    if (frame.data === "[DONE]") return true;
    const chunk = JSON.parse(frame.data);
    if (chunk.error) {
      if (id !== null) state.lastId = id;
      throw new StreamError(chunk.error.code || "stream_error", chunk.error.message || "The stream failed.");
    }
    if (chunk.model && chunk.model !== state.model) {
      state.model = chunk.model; // a fallback to another backend before the first token
      on.model?.(chunk.model);
    }
    const choice = chunk.choices?.[0];
    const delta = choice?.delta ?? {};
    // Every part of the delta is handed on within this one frame, before its id is recorded
    // below: the id guard above then keeps a resume from repeating any of them (reasoning
    // and tool-call fragments are appended like text, so a repeat would show twice).
    if (typeof delta.reasoning_content === "string" && delta.reasoning_content) {
      on.reasoning?.(delta.reasoning_content);
    }
    if (typeof delta.refusal === "string" && delta.refusal) on.refusal?.(delta.refusal);
    if (delta.content) on.delta?.(delta.content);
    if (Array.isArray(delta.tool_calls)) for (const piece of delta.tool_calls) on.toolCall?.(piece);
    if (choice?.finish_reason) on.finish?.(choice.finish_reason);
    if (chunk.usage) on.usage?.(chunk.usage);
    // Only now is the frame shown, so only now may a resume start after it.
    if (id !== null) state.lastId = id;
  }
  return false;
}

/** A new response from `resume()` after a backoff, or throws when resuming cannot work. */
async function reconnect(resume, signal, on) {
  for (let attempt = 1; attempt <= MAX_RECONNECTS; attempt++) {
    const delay = backoffMs(attempt);
    on.connectionLost?.(attempt, delay);
    await sleep(delay, signal);
    let response;
    try {
      response = await resume();
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      if (!(err instanceof TypeError)) throw err;
      continue; // still offline
    }
    if (response.ok) {
      on.reconnected?.();
      return response;
    }
    // 409 (a response no worker has started yet), 429 and 5xx may pass; 401 or 404 will
    // not get better by retrying.
    if (response.status !== 409 && response.status !== 429 && response.status < 500) {
      throw await httpError(response);
    }
  }
  throw new StreamError("connection_lost", "The connection was lost and could not be restored.");
}

/** Ask the gateway to stop generating (the worker closes the upstream stream). */
export function cancelStream(requestId, apiKey) {
  // keepalive: the cancel still goes out if the tab is closing.
  return fetch(`/v1/streams/${encodeURIComponent(requestId)}`, {
    method: "DELETE",
    headers: authHeaders(apiKey),
    keepalive: true,
  });
}
