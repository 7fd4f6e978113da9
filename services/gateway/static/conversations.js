// The chat's server-side conversation (docs/conversations.md). The first question of a new
// chat creates it (titled with the question's start); every question after that is sent
// alone, with the conversation's id, and the gateway puts the history before it and appends
// the turn when the answer ends. The id is kept in the URL (#conv=conv_…, so a reload or a
// shared link opens it again) and in the tab's sessionStorage (so the bare URL does too).
import { authHeaders, HttpError, httpError } from "./stream.js";
import { addAssistantTurn, addUserTurn } from "./view.js";

const STORAGE = "tokenbus.conversation";
const HASH = /^#conv=([A-Za-z0-9_-]{1,64})$/;
const TITLE_CHARS = 60;
const PAGE = 100; // items a request: the most the API gives
const BUSY_TRIES = 12; // ~15 s in all
const SAVE_WAIT_MS = 15_000;
// A marker the gateway appends in place of an answer that failed or was cancelled.
const MARKER = /^\[no answer: ([a-z_]+)\]$/;

/** An error of the page's own about the conversation, in words to show as they are. */
export class ConversationError extends Error {}

async function api(method, path, apiKey, body) {
  const init = { method, headers: authHeaders(apiKey) };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await httpError(response);
  return response.json();
}

const itemsPath = (id) => `/v1/conversations/${encodeURIComponent(id)}/items`;

/** A conversation's title: its first question, on one line, cut to about 60 characters. */
export function titleFor(text) {
  const flat = text.replace(/\s+/g, " ").trim();
  if (flat.length <= TITLE_CHARS) return flat;
  const cut = flat.slice(0, TITLE_CHARS);
  const space = cut.lastIndexOf(" ");
  return `${(space > TITLE_CHARS / 2 ? cut.slice(0, space) : cut).trimEnd()}…`;
}

/** A new conversation titled after `question` (more `metadata`: strings); its id. */
export async function createConversation(apiKey, question, metadata = {}) {
  const body = { metadata: { title: titleFor(question), ...metadata } };
  return (await api("POST", "/v1/conversations", apiKey, body)).id;
}

/** Delete a conversation (its items go with it); never fails. */
export function deleteConversation(apiKey, id) {
  return api("DELETE", `/v1/conversations/${encodeURIComponent(id)}`, apiKey).catch(() => null);
}

/** All of a conversation's items, oldest first. */
export async function conversationItems(apiKey, id) {
  const items = [];
  for (let after = null; ; ) {
    const query = new URLSearchParams({ order: "asc", limit: String(PAGE) });
    if (after) query.set("after", after);
    const page = await api("GET", `${itemsPath(id)}?${query}`, apiKey);
    items.push(...page.data);
    if (!page.has_more || !page.last_id) return items;
    after = page.last_id;
  }
}

/** The tenant's most recently used conversations (a tokenbus extension), newest first. */
export async function recentConversations(apiKey, limit = 20) {
  return (await api("GET", `/v1/conversations?limit=${limit}`, apiKey)).data;
}

// ---- which conversation is open

/** The conversation the URL names, or null. */
export function conversationInUrl() {
  return HASH.exec(location.hash)?.[1] ?? null;
}

/** The conversation to open: the URL's, else the one this tab had open last, or null. */
export function savedConversation() {
  return conversationInUrl() ?? sessionStorage.getItem(STORAGE);
}

/** Keep `id` as the open conversation (replacing the URL's: no new history entry). */
export function keepConversation(id) {
  sessionStorage.setItem(STORAGE, id);
  if (location.hash !== `#conv=${id}`) window.history.replaceState(null, "", `#conv=${id}`);
}

export function forgetConversation() {
  sessionStorage.removeItem(STORAGE);
  if (location.hash) window.history.replaceState(null, "", location.pathname + location.search);
}

// ---- its items on screen

const isUser = (item) => item.type === "message" && item.role === "user";

/** A message item's text: its content string, or its text (and refusal) parts joined. */
function itemText(item) {
  if (typeof item.content === "string") return item.content;
  return (item.content ?? []).map((part) => part.text ?? part.refusal ?? "").join("");
}

/**
 * Show a conversation's items as the chat's turns: questions, answers (with their tool calls)
 * and markers of answers that failed or were cancelled, shown as such. Returns the texts as
 * chat messages ([{role, content}]), as the page keeps them.
 */
export function showItems(items) {
  const history = [];
  const views = [];
  let view = null; // the answer the items after the last question go into
  const answerView = () => {
    if (!view) {
      view = addAssistantTurn({ past: true });
      views.push({ view, state: "done" });
    }
    return view;
  };
  for (const item of items) {
    if (isUser(item)) {
      const text = itemText(item);
      addUserTurn(text);
      history.push({ role: "user", content: text });
      view = null;
    } else if (item.type === "message" && item.role === "assistant") {
      const text = itemText(item);
      const marker = item.status === "incomplete" ? MARKER.exec(text.trim()) : null;
      const shown = answerView();
      if (marker) {
        const cancelled = marker[1] === "cancelled";
        views.at(-1).state = cancelled ? "stopped" : "failed";
        shown.setStatus(cancelled ? "This answer was cancelled." : `This answer ${marker[1]}.`, cancelled ? "info" : "warn");
      } else if (text) {
        shown.append(shown.text ? `\n\n${text}` : text);
        history.push({ role: "assistant", content: text });
      }
    } else if (item.type === "function_call") {
      const shown = answerView();
      shown.toolCall({ index: shown.calls.size, id: item.call_id, function: { name: item.name, arguments: item.arguments } });
    }
    // Tool results and system messages (from API clients) are not part of this page's chat.
  }
  for (const { view: shown, state } of views) shown.end(state);
  return history;
}

/** How many questions `history` (the page's [{role, content}]) has. */
export const questions = (history) => history.filter((m) => m.role === "user").length;

/** Words for an error about the conversation itself, or null for the usual ones. */
export function conversationProblem(err) {
  if (err instanceof ConversationError) return err.message;
  if (err instanceof HttpError && err.status === 404 && err.code === "not_found") {
    return "This conversation no longer exists (deleted, or unused for too long). Choose “New chat” to start another.";
  }
  return null;
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Send (`send()`: the request), again while the conversation is still busy with the turn
 * before (409 conversation_busy: the gateway appends a turn just after its answer ends, and
 * after a Stop once the cancel is through). `run.sent` says whether a request is out;
 * a Stop (`run.stopped`) while waiting ends the wait.
 */
export async function whenFree(run, send) {
  for (let attempt = 1; ; attempt++) {
    run.sent = true;
    try {
      return await send();
    } catch (err) {
      const busy = err instanceof HttpError && err.status === 409 && err.code === "conversation_busy";
      if (!busy || run.answered || attempt >= BUSY_TRIES) throw err;
      run.sent = false;
      run.view.setStatus("waiting for the previous turn to be saved…");
      await pause(Math.min(2000, 100 * 2 ** attempt));
      if (run.stopped || run.discarded) throw err;
      run.view.setStatus("");
    }
  }
}

/**
 * Regenerate in a conversation: the last turn (its question, and the answer or marker after
 * it) is deleted from the conversation, so the question, sent again, is answered from the same
 * history as before, and the conversation (as a reload shows it) keeps only the new answer.
 * `saved`: how many questions the gateway took; the last one's turn is appended a moment after
 * its answer ends, so until the conversation has them all its items are read again. A last
 * question the gateway never took is only sent again. Resolves to the number of questions
 * saved now.
 */
export async function dropLastTurn({ apiKey, id, history, saved, run }) {
  const deadline = performance.now() + SAVE_WAIT_MS;
  let items = await conversationItems(apiKey, id);
  while (items.filter(isUser).length < saved) {
    if (performance.now() > deadline) {
      throw new ConversationError("The last answer is still being saved. Try again in a moment.");
    }
    run.view.setStatus("waiting for the last answer to be saved…");
    await pause(200);
    if (run.stopped || run.discarded) return saved;
    items = await conversationItems(apiKey, id);
  }
  run.view.setStatus("");
  const start = items.findLastIndex(isUser);
  const question = history.findLast((m) => m.role === "user")?.content;
  // Not the question on screen (another tab went on meanwhile): nothing of it is deleted.
  if (start < 0 || saved < questions(history) || itemText(items[start]) !== question) return saved;
  for (const item of items.slice(start).reverse()) {
    const response = await fetch(`${itemsPath(id)}/${encodeURIComponent(item.id)}`, {
      method: "DELETE",
      headers: authHeaders(apiKey),
    });
    if (!response.ok && response.status !== 404) throw await httpError(response);
  }
  return saved - 1;
}
