// Behaviour every console page shares, bound by delegation (it works on content htmx swaps
// in) and without inline handlers (the Content-Security-Policy allows none).
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-confirm-open]");
    if (opener) {
      var dialog = opener.closest("form").querySelector("dialog");
      if (dialog && dialog.showModal) { dialog.showModal(); }
      return;
    }
    var cancel = event.target.closest("[data-confirm-cancel]");
    if (cancel) {
      cancel.closest("dialog").close();
    }
  });

  // the organisation switcher submits as soon as another organisation is chosen
  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-submit-on-change]")) {
      event.target.form.requestSubmit();
    }
  });
})();
