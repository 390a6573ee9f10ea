// Copy buttons: <button data-copy-from="ELEMENT_ID" data-copied-label="Copied">. Copies the
// element's value (an input) or text, with the Clipboard API where the page is a secure context
// (https, localhost) and the selection + execCommand fallback elsewhere; the text stays selected
// so it can be copied by hand if both fail.
(function () {
  "use strict";

  function announce(button, text) {
    var row = button.closest("[data-copy-scope], .panel, section") || document.body;
    var status = row.querySelector(".copy-status");
    if (status) { status.textContent = text; }
  }

  function selectSource(source) {
    if (source.select) {
      source.focus();
      source.select();
      return;
    }
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function done(button) {
    var label = button.getAttribute("data-copied-label") || "Copied";
    if (!button.hasAttribute("data-label")) { button.setAttribute("data-label", button.textContent); }
    button.textContent = label;
    button.classList.add("copied");
    announce(button, label);
    window.setTimeout(function () {
      button.textContent = button.getAttribute("data-label");
      button.classList.remove("copied");
    }, 2000);
  }

  function fallback(button, source) {
    selectSource(source);
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (error) { ok = false; }
    if (ok) { done(button); } else { announce(button, button.getAttribute("data-copy-failed-label") || "Press Ctrl+C to copy"); }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-from]");
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy-from"));
    if (!source) { return; }
    var text = typeof source.value === "string" ? source.value : source.textContent;
    text = text.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(button); }, function () { fallback(button, source); });
    } else {
      fallback(button, source);
    }
  });
})();
