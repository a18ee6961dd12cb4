// InterOcc: progressive enhancement only. Every page works without this file.
//
//   <button type="button" class="copy" data-copy="TEXT" hidden>Copy</button>
//       shown only when script runs; copies TEXT to the clipboard and says so.
//   <form data-confirm="Really delete?">
//       asks before submitting (the page must also work without the question).
//   .table-wrap, table.list, pre
//       when they scroll sideways, become focusable so the keyboard can scroll them too.
"use strict";

(function () {
  function announce(message) {
    var region = document.getElementById("live-region");
    if (!region) {
      region = document.createElement("div");
      region.id = "live-region";
      region.className = "visually-hidden";
      region.setAttribute("aria-live", "polite");
      document.body.appendChild(region);
    }
    region.textContent = "";
    window.setTimeout(function () {
      region.textContent = message;
    }, 50);
  }

  // Older browsers, and pages served over plain http from elsewhere than localhost,
  // have no async clipboard: copy through a selected, off-screen textarea instead.
  function copyFallback(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (e) {
      ok = false;
    }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy failed"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return copyFallback(text);
      });
    }
    return copyFallback(text);
  }

  function enhanceCopyButtons() {
    var buttons = document.querySelectorAll("button.copy[data-copy]");
    Array.prototype.forEach.call(buttons, function (button) {
      var label = button.textContent;
      button.hidden = false;
      button.disabled = false;
      button.addEventListener("click", function () {
        var text = button.getAttribute("data-copy");
        copyText(text).then(
          function () {
            button.textContent = "Copied";
            button.classList.add("copied");
            announce("Copied " + text + " to the clipboard");
            window.setTimeout(function () {
              button.textContent = label;
              button.classList.remove("copied");
            }, 2000);
          },
          function () {
            announce("Could not copy: select the handle and copy it by hand");
          }
        );
      });
    });
  }

  function enhanceConfirmForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!(form instanceof HTMLFormElement)) return;
      var question = form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) {
        event.preventDefault();
      }
    });
  }

  // A region that scrolls must be reachable from the keyboard (WCAG 2.1.1). Templates
  // should give a wide .table-wrap tabindex="0" and an aria-label themselves; this catches
  // the ones that did not, and code blocks in communiqués.
  var SCROLLERS = ".table-wrap, table.list, .content pre";

  function focusableScrollers() {
    var regions = document.querySelectorAll(SCROLLERS);
    Array.prototype.forEach.call(regions, function (region) {
      var scrolls = region.scrollWidth > region.clientWidth + 1;
      if (scrolls && !region.hasAttribute("tabindex")) {
        region.setAttribute("tabindex", "0");
        region.setAttribute("data-scroll-focus", "");
      } else if (!scrolls && region.hasAttribute("data-scroll-focus")) {
        region.removeAttribute("tabindex");
        region.removeAttribute("data-scroll-focus");
      }
    });
  }

  function start() {
    enhanceCopyButtons();
    enhanceConfirmForms();
    focusableScrollers();
    var pending = 0;
    window.addEventListener("resize", function () {
      window.clearTimeout(pending);
      pending = window.setTimeout(focusableScrollers, 150);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
