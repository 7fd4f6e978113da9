// The conversation's DOM: one <article> per turn. Model text only ever reaches the page
// through renderMarkdown (sanitized) or textContent, never through innerHTML directly.
import { renderMarkdown } from "./markdown.js";
import { HttpError, StreamError } from "./stream.js";

const conversation = document.getElementById("conversation");
const empty = document.getElementById("empty"); // the first-visit hint, inside the conversation
const notice = document.getElementById("notice");

// ---- notices (errors that belong to no answer: a send that failed, a key that was refused)

export function showNotice(message, { keyAction = false } = {}) {
  document.getElementById("notice-text").textContent = message;
  document.getElementById("notice-key").hidden = !keyAction;
  notice.hidden = false;
}

export function hideNotice() {
  notice.hidden = true;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function scrollToEnd() {
  // Follow the answer only when the reader is already at the bottom: someone who scrolled
  // up to re-read must not be yanked down by every token.
  const gap = conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight;
  if (gap < 80) conversation.scrollTop = conversation.scrollHeight;
}

export function clearConversation() {
  conversation.replaceChildren(empty);
  empty.hidden = false;
}

/**
 * A question, or (`by`, in a room) a member's message: {name, mine, asked}, shown with the
 * speaker's name and whether the AI was asked, since several people write there.
 */
export function addUserTurn(text, by = null) {
  empty.hidden = true;
  const bubble = el("div", { class: "bubble", text });
  let turn;
  if (by) {
    const said = by.asked ? `${by.name} asked the AI` : `${by.name} said`;
    const speaker = el("p", { class: "speaker" }, el("span", { class: "name", text: by.name }));
    if (by.mine) speaker.append(el("span", { class: "you", text: " (you)" }));
    if (by.asked) speaker.append(el("span", { class: "asked", text: "asked the AI" }));
    turn = el("article", { class: `turn user ${by.mine ? "mine" : "theirs"}`, "aria-label": said }, speaker, bubble);
  } else {
    turn = el("article", { class: "turn user", "aria-label": "You" }, bubble);
  }
  conversation.append(turn);
  conversation.scrollTop = conversation.scrollHeight;
  return turn;
}

/**
 * The assistant's turn; returns the handle the controller updates as the answer streams.
 * `past`: an answer of the conversation's history, shown whole at once: no typing indicator,
 * and not announced (a reader is not read the whole history on opening a conversation).
 */
export function addAssistantTurn({ past = false } = {}) {
  empty.hidden = true;
  const typing = el(
    "span",
    { class: "typing", role: "status", "aria-label": "tokenbus is typing" },
    el("i"),
    el("i"),
    el("i"),
  );
  // aria-busy while streaming: screen readers then read the finished answer once, instead
  // of re-reading it after every token.
  const answer = el("div", {
    class: "bubble answer markdown",
    ...(past ? {} : { "aria-live": "polite", "aria-busy": "true" }),
    "aria-label": "Answer",
  });
  const status = el("p", { class: "status", role: "status" });
  const facts = el("p", { class: "facts", "aria-label": "Answer details" });
  const turn = el("article", { class: "turn assistant", "aria-label": "tokenbus" }, typing, answer, status, facts);
  if (past) typing.remove();
  conversation.append(turn);
  scrollToEnd();
  return new AnswerView(turn, typing, answer, status, facts);
}

/**
 * One streamed answer on screen. Besides its text (Markdown, in `answer`) an answer may have
 * reasoning (a "Thinking" section above the text), a refusal (in place of the text, labelled)
 * and tool calls (one collapsed block per call index, below the text). Those parts are
 * created when their first piece arrives and are plain text (textContent) only.
 */
export class AnswerView {
  constructor(turn, typing, answer, status, facts) {
    Object.assign(this, { turn, typing, answer, status, facts });
    this.text = "";
    this.refusalText = "";
    this.reasoningText = "";
    this.calls = new Map(); // call index -> {id, name, arguments, block, nameNode, argsNode}
    this.textDirty = false;
    this.dirtyCalls = new Set();
    this.pending = false;
    this.answering = false; // text, a refusal or a tool call has begun (past the thinking)
    this.values = {};
  }

  /** Append streamed text; the Markdown is re-rendered at most once per animation frame. */
  append(text) {
    this.begin();
    this.text += text;
    this.textDirty = true;
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => this.render());
  }

  render() {
    this.pending = false;
    if (this.textDirty) this.answer.innerHTML = renderMarkdown(this.text);
    this.textDirty = false;
    for (const call of this.dirtyCalls) call.argsNode.textContent = prettyArguments(call.arguments);
    this.dirtyCalls.clear();
    scrollToEnd();
  }

  /** The answer proper (not its reasoning) has begun. */
  begin() {
    this.typing.remove();
    if (this.answering) return;
    this.answering = true;
    // The Thinking section is open while the reasoning streams, so it can be followed, and
    // folds away once the answer starts: the answer is what the reader came for, and the
    // reasoning stays one click away. A reader who opened or closed it meanwhile keeps their
    // choice.
    if (this.thinking && !this.thinking.touched) this.thinking.details.open = false;
    if (this.thinking) this.thinking.details.dataset.state = "done";
  }

  /** Append streamed reasoning (vLLM/DeepSeek `reasoning_content`) to the Thinking section. */
  reason(text) {
    this.typing.remove();
    if (!this.thinking) {
      const body = el("div", { class: "thinking-text" });
      const summary = el("summary", {}, el("span", { class: "thinking-label", text: "Thinking" }));
      const details = el("details", { class: "thinking", open: "", "data-state": "streaming" }, summary, body);
      const thinking = { details, text: document.createTextNode(""), touched: false };
      body.append(thinking.text);
      // A click (or Enter/Space, which click the summary) is the reader's own choice.
      summary.addEventListener("click", () => (thinking.touched = true));
      if (this.answering) {
        details.open = false; // reasoning after the answer began: folded at once
        details.dataset.state = "done";
      }
      this.answer.before(details);
      this.thinking = thinking;
    }
    this.reasoningText += text;
    this.thinking.text.appendData(text);
    scrollToEnd();
  }

  /** Append streamed refusal text: shown where the answer goes, labelled as a refusal. */
  refuse(text) {
    this.begin();
    if (!this.refusal) {
      this.refusal = document.createTextNode("");
      const bubble = el(
        "div",
        { class: "bubble refusal", role: "group", "aria-label": "Refusal", "aria-live": "polite", "aria-busy": "true" },
        el("span", { class: "refusal-label", text: "Refused" }),
        el("span", { class: "refusal-text" }, this.refusal),
      );
      this.answer.after(bubble);
      this.refusalBubble = bubble;
    }
    this.refusalText += text;
    this.refusal.appendData(text);
    scrollToEnd();
  }

  /** One piece of a streamed tool call (OpenAI's `delta.tool_calls[i]`). */
  toolCall(piece) {
    this.begin();
    const index = Number.isInteger(piece.index) ? piece.index : 0;
    let call = this.calls.get(index);
    if (!call) {
      const nameNode = el("code", { class: "tool-name" });
      const argsNode = el("pre", { class: "tool-args" });
      const summary = el("summary", {}, el("span", { class: "tool-label", text: "tool call" }), " ", nameNode);
      const block = el("details", { class: "tool-call", "data-index": String(index) }, summary, argsNode);
      call = { id: null, name: "", arguments: "", block, nameNode, argsNode };
      this.calls.set(index, call);
      if (!this.tools) {
        this.tools = el("div", { class: "tool-calls", role: "group", "aria-label": "Tool calls" });
        this.status.before(this.tools);
      }
      // In index order, whatever order the calls begin in.
      const next = [...this.tools.children].find((b) => Number(b.dataset.index) > index);
      this.tools.insertBefore(block, next ?? null);
    }
    if (piece.id && !call.id) {
      call.id = piece.id;
      call.block.dataset.callId = piece.id;
    }
    const fn = piece.function ?? {};
    if (typeof fn.name === "string" && fn.name) {
      call.name += fn.name;
      call.nameNode.textContent = call.name;
    }
    if (typeof fn.arguments === "string" && fn.arguments) {
      call.arguments += fn.arguments;
      this.dirtyCalls.add(call);
      this.schedule();
    }
  }

  /** The answer ended (`state`: done, stopped, failed); a final render, and readers notified. */
  end(state) {
    this.typing.remove();
    this.textDirty = true;
    this.render();
    this.answer.setAttribute("aria-busy", "false");
    this.refusalBubble?.setAttribute("aria-busy", "false");
    if (this.thinking) this.thinking.details.dataset.state = "done";
    this.turn.dataset.state = state;
  }

  setStatus(message, kind = "info") {
    this.status.textContent = message;
    this.status.className = `status ${kind}`;
    // An error must be announced even when the reader's focus is elsewhere.
    this.status.setAttribute("role", kind === "error" ? "alert" : "status");
  }

  /** Merge `values` into the facts line (route, model, score, ttft, rate, tokens, ...). */
  setFacts(values) {
    Object.assign(this.values, values);
    const v = this.values;
    const items = [];
    if (v.route) items.push(["route", `route ${v.route}`, v.reason]);
    if (v.score) items.push(["score", `score ${v.score}`]);
    if (v.model) items.push(["model", `model ${v.model}`]);
    if (v.ttftMs != null) items.push(["ttft", `first token ${Math.round(v.ttftMs)} ms`]);
    if (v.rate != null) items.push(["rate", `${v.rate.toFixed(0)} tokens/s`]);
    if (v.usage) {
      const u = v.usage;
      items.push(["tokens", `${u.total_tokens} tokens (${u.prompt_tokens} in, ${u.completion_tokens} out)`]);
    }
    if (v.reconnects) items.push(["reconnects", `reconnected ${v.reconnects}×`]);
    this.facts.replaceChildren(
      ...items.map(([name, text, title]) =>
        el("span", { class: "fact", "data-fact": name, text, ...(title ? { title } : {}) }),
      ),
    );
  }
}

/**
 * A call's arguments for reading: pretty-printed once they are whole JSON, as streamed until
 * then (a half-streamed object does not parse yet), and as sent if the model's JSON is bad.
 */
function prettyArguments(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** A sentence a user can act on, for any error the chat can meet. */
export function describeError(err) {
  if (err instanceof HttpError) {
    switch (err.status) {
      case 401:
      case 403:
        return "The gateway did not accept your API key. Choose “API key” to enter another one.";
      case 429:
        return err.retryAfterS != null
          ? `Too many requests right now. Try again in ${err.retryAfterS} s.`
          : "Too many requests right now. Try again in a little while.";
      case 404:
      case 410: // a response whose events are no longer kept
        return "This answer is no longer available to resume. Regenerate to ask again.";
      case 400:
        return `The gateway refused the request: ${err.message}`;
      default:
        if (err.status >= 500) {
          return `The server had a problem (${err.status}): ${err.message} Try again in a moment.`;
        }
        return `The request failed (${err.status}): ${err.message}`;
    }
  }
  if (err instanceof StreamError) {
    const messages = {
      connection_lost: "The connection was lost and could not be restored. Regenerate to try again.",
      worker_lost: "The model worker stopped mid-answer. Regenerate to try again.",
      deadline_exceeded: "The answer took longer than its deadline and was stopped.",
      stream_timeout: "The answer stalled. Regenerate to try again.",
    };
    return messages[err.code] || `The answer failed: ${err.message}`;
  }
  if (err instanceof TypeError) return "Could not reach the gateway. Check your connection and try again.";
  return `Something went wrong: ${err?.message || err}`;
}
