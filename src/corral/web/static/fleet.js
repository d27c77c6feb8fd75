// The fleet and node pages: an action htmx could not swap (refused: 403, 409) shows its
// reason in the page's #flash rather than failing silently.
(function () {
  "use strict";
  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail.xhr;
    var flash = document.getElementById("flash");
    if (!xhr || xhr.status === 401 || !flash) return;
    var text = "";
    try {
      var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var found = doc.querySelector("[data-testid=error]");
      text = (found || doc.body).textContent.trim();
    } catch (err) { text = ""; }
    flash.textContent = text || ("the server answered " + xhr.status);
    flash.classList.add("error");
  });
  document.addEventListener("htmx:oobAfterSwap", function (e) {
    if (e.detail.target && e.detail.target.id === "flash") e.detail.target.classList.remove("error");
  });
})();
