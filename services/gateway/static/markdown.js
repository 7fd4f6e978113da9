// Model output -> safe HTML. marked turns Markdown into HTML; DOMPurify then removes anything
// that could run script or change the page (the model's text is untrusted input: a prompt
// can make it print <img onerror=...> or a javascript: link). The CSP is the second wall.
import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";

const marked = new Marked({ gfm: true, breaks: true });

// Links in answers open in a new tab and do not tell the target where they came from.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

const PURIFY = {
  USE_PROFILE: { html: true },
  // Images would load from anywhere the text says (the CSP blocks them anyway, noisily);
  // forms and styles have no business in an answer.
  FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select"],
  FORBID_ATTR: ["style"],
};

/** Sanitized HTML for `text`; a half-streamed code fence renders as an open code block. */
export function renderMarkdown(text) {
  return DOMPurify.sanitize(marked.parse(text, { async: false }), PURIFY);
}
