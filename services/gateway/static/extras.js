// "Advanced": which OpenAI API the page talks to, and extra request fields, a JSON object
// merged into the body of every request. The page offers no tools and no model options of its
// own; this box is how a developer (and the tests) asks for tools, reasoning or any other API
// field from the page, e.g.
//   {"tools": [{"type": "function", "function": {"name": "get_weather"}}],
//    "metadata": {"llmsim_reasoning": "5"}}
// (the Responses API's function tools are flat: {"type": "function", "name": "get_weather"}).
// The conversation (chat: a header; Responses: the `conversation` field) is the page's own.
const $ = (id) => document.getElementById(id);
const advanced = $("advanced");
const box = $("extra-fields");
const error = $("extra-error");
const active = $("extra-active");
const apiChoice = $("api-choice");
const apiActive = $("api-active");

// Like the API key: for as long as the tab lives, on this origin only.
const STORAGE = "tokenbus.extraFields";
const API_STORAGE = "tokenbus.api";
// The page sets these itself (the gateway acts on them too): an extra value would either be
// ignored or break the page's stream, so it is refused with a message instead.
const OWN = {
  chat: ["model", "messages", "stream", "stream_options"],
  responses: ["model", "input", "stream", "conversation"],
};

/** The API answers are streamed through: "chat" (Chat Completions) or "responses". */
export function chosenApi() {
  return apiChoice.querySelector("input:checked")?.value === "responses" ? "responses" : "chat";
}

/** The box's fields: {fields} (empty box: {}), or {problem} saying what is wrong. */
function parse() {
  const text = box.value.trim();
  if (!text) return { fields: {} };
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { problem: `The extra request fields are not valid JSON (${err.message}).` };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { problem: 'The extra request fields must be a JSON object, like {"metadata": {}}.' };
  }
  const own = OWN[chosenApi()].find((key) => Object.hasOwn(value, key));
  if (own) return { problem: `The extra request fields may not set “${own}”: the page sets it itself.` };
  return { fields: value };
}

/** Show (or clear) the problem under the box; returns the parse result. */
function check() {
  const result = parse();
  error.textContent = result.problem ? `${result.problem} Fix it, or empty the box, to send.` : "";
  box.setAttribute("aria-invalid", String(Boolean(result.problem)));
  active.hidden = !box.value.trim() || Boolean(result.problem);
  return result;
}

/**
 * The extra fields for a request, or null when they are invalid: then the message is shown,
 * the Advanced section opened and its box focused, and the caller must not send.
 */
export function extraFields() {
  const { fields, problem } = check();
  if (!problem) return fields;
  advanced.open = true;
  box.focus();
  return null;
}

function showApi() {
  apiActive.hidden = chosenApi() !== "responses";
}

const savedApi = sessionStorage.getItem(API_STORAGE);
for (const radio of apiChoice.querySelectorAll("input")) {
  if (radio.value === savedApi) radio.checked = true;
}
showApi();
apiChoice.addEventListener("change", () => {
  sessionStorage.setItem(API_STORAGE, chosenApi());
  showApi();
  if (box.value.trim()) check(); // the page's own fields differ between the APIs
});

box.value = sessionStorage.getItem(STORAGE) ?? "";
check();
box.addEventListener("input", () => {
  sessionStorage.setItem(STORAGE, box.value);
  // While a problem is shown, it goes as soon as it is fixed; a new one waits for the blur
  // (or a send), so half-typed JSON is not scolded at every key.
  if (error.textContent) check();
  else active.hidden = !box.value.trim() || Boolean(parse().problem);
});
box.addEventListener("change", check);
