// One streamed answer through OpenAI's Responses API: POST /v1/responses read as SSE, its
// events handed to the same `on` as a chat answer (see streamChat in stream.js), so the page
// shows both alike. Resumed after a cut with GET /v1/responses/{id}?stream=true&starting_after=N
// (N: the last event's sequence_number), stopped with POST /v1/responses/{id}/cancel.
import { authHeaders, httpError, readResuming, sseFrames, StreamError } from "./stream.js";

/**
 * The Responses request for `messages` ([{role, content}]): the turns as message input items,
 * which the Responses API accepts in chat's shape; the `extra` request fields merged in. With
 * a server-side `conversation` (its id), `messages` is only the new turn: the gateway puts the
 * history before it and appends the turn when the answer ends.
 */
export function responsesBody({ extra, model, messages, conversation = null }) {
  return {
    ...extra, // never one of the page's own fields below (extras.js refuses those)
    model,
    input: messages.map(({ role, content }) => ({ role, content })),
    ...(conversation ? { conversation } : {}),
    stream: true,
  };
}

/** Stream one answer; the same contract as streamChat (stream.js), the conversation in `body`. */
export async function streamResponse({ body, apiKey, signal, on }) {
  const response = await fetch("/v1/responses", {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream", ...authHeaders(apiKey) },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await httpError(response);
  // No route headers here: the model comes with response.created.
  on.response?.({ requestId: response.headers.get("x-request-id") });
  signal.throwIfAborted(); // Stop may have been pressed while the request was queued

  const state = {
    id: null, // the response's id (resp_...), from response.created
    lastSeq: null, // the sequence_number of the last event shown
    model: null,
    calls: new Map(), // function_call item id -> its index among the answer's calls
    error: null, // an `error` event not yet followed by response.failed
    apiKey,
    on,
  };
  const resume = () => {
    // Cut before response.created: there is no id to resume with (a TypeError would be
    // taken for "still offline").
    if (state.id === null) throw new StreamError("connection_lost", "lost before the response began");
    const after = state.lastSeq === null ? "" : `&starting_after=${state.lastSeq}`;
    const url = `/v1/responses/${encodeURIComponent(state.id)}?stream=true${after}`;
    return fetch(url, { headers: { accept: "text/event-stream", ...authHeaders(apiKey) }, signal });
  };
  await readResuming({ response, read: (r) => consume(r, state), resume, signal, on });
}

/** Ask the gateway to stop generating; resolves when the response has ended. */
export function cancelResponse(id, apiKey) {
  // keepalive: the cancel still goes out if the tab is closing.
  return fetch(`/v1/responses/${encodeURIComponent(id)}/cancel`, {
    method: "POST",
    headers: authHeaders(apiKey),
    keepalive: true,
  });
}

/** Hand the events of one response to `state.on`; resolves when it ends: true at [DONE]. */
async function consume(response, state) {
  for await (const frame of sseFrames(response.body)) {
    if (frame.data === "[DONE]") return true;
    const event = JSON.parse(frame.data);
    const seq = Number.isInteger(event.sequence_number) ? event.sequence_number : null;
    // The gateway replays only events after starting_after; this guard keeps a duplicate from
    // ever reaching the screen even if a proxy replays.
    if (seq !== null && state.lastSeq !== null && seq <= state.lastSeq) continue;
    if (event.type === "error") {
      // Either the start of a failure (response.failed follows at once), or the gateway's
      // "resume with starting_after" when the stream stalled: the stream then just ends.
      // Its number is not recorded: a stall's error carries the next event's number.
      state.error = event;
      continue;
    }
    handle(event, state);
    // Only now is the event shown, so only now may a resume start after it.
    if (seq !== null) state.lastSeq = seq;
  }
  if (state.error) {
    const { code, message } = state.error;
    state.error = null;
    throw new StreamError(code || "stream_error", message || "The stream failed.");
  }
  return false; // cut off: resume
}

function handle(event, state) {
  const { on } = state;
  switch (event.type) {
    case "response.created":
      state.id = event.response.id;
      on.cancelable?.(() => cancelResponse(state.id, state.apiKey));
      setModel(event.response, state);
      break;
    case "response.output_text.delta":
      if (event.delta) on.delta?.(event.delta);
      break;
    case "response.reasoning_text.delta":
    case "response.reasoning_summary_text.delta":
      if (event.delta) on.reasoning?.(event.delta);
      break;
    case "response.refusal.delta":
      if (event.delta) on.refusal?.(event.delta);
      break;
    case "response.output_item.added":
      if (event.item?.type === "function_call") {
        const { id, call_id: callId, name, arguments: args } = event.item;
        const index = state.calls.size;
        state.calls.set(id, index);
        on.toolCall?.({ index, id: callId || null, function: { name, arguments: args } });
      }
      break;
    case "response.function_call_arguments.delta":
      if (event.delta && state.calls.has(event.item_id)) {
        on.toolCall?.({ index: state.calls.get(event.item_id), function: { arguments: event.delta } });
      }
      break;
    case "response.completed":
    case "response.incomplete":
      setModel(event.response, state);
      on.finish?.(finishReason(event.response));
      if (event.response.usage) on.usage?.(chatUsage(event.response.usage));
      break;
    case "response.failed": {
      const error = state.error ?? event.response?.error ?? {};
      state.error = null;
      // final: a failed response stays failed, whatever its code (a resume would replay it).
      throw new StreamError(error.code || "stream_error", error.message || "The answer failed.", {
        final: true,
      });
    }
    default: // response.in_progress, content parts, the `.done` events: nothing new to show
  }
}

function setModel(response, state) {
  if (response?.model && response.model !== state.model) {
    state.model = response.model; // a retry or fallback names the model that answered
    state.on.model?.(response.model);
  }
}

/** A finished response's end in chat's finish_reason words (what the page tells apart). */
function finishReason(response) {
  if (response.status === "cancelled") return "cancelled";
  const reason = response.incomplete_details?.reason;
  if (reason === "max_output_tokens") return "length";
  if (reason) return reason; // content_filter
  return response.output?.some((item) => item.type === "function_call") ? "tool_calls" : "stop";
}

/** Responses usage in chat's names, which the facts line shows. */
function chatUsage(usage) {
  return {
    prompt_tokens: usage.input_tokens,
    completion_tokens: usage.output_tokens,
    total_tokens: usage.total_tokens ?? usage.input_tokens + usage.output_tokens,
  };
}
