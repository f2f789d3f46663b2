/* aigi dashboard: a little plain JavaScript (no framework, no build step).
 *
 * - the job list polls its rows partial every 2 s while a listed job is unfinished
 *   (and every 5 s on the first page otherwise, so new submissions show up);
 * - the job page toggles the Grad-CAM overlay and the ROI boxes, and reloads itself
 *   while the job runs unless the review form is being edited.
 */
(function () {
  "use strict";

  var BUSY_MS = 2000;
  var IDLE_MS = 5000;
  var FETCH_HEADERS = { "X-Requested-With": "aigi-dashboard" };

  function liveRows() {
    var timer = null;

    function current() {
      return document.getElementById("job-rows");
    }

    function schedule(delay) {
      var rows = current();
      if (!rows) return;
      if (delay === undefined) {
        if (rows.dataset.pending === "true") delay = BUSY_MS;
        else if (rows.dataset.idlePoll === "true") delay = IDLE_MS;
        else return;
      }
      clearTimeout(timer);
      timer = setTimeout(refresh, delay);
    }

    function refresh() {
      var rows = current();
      if (!rows) return;
      if (document.hidden) {
        schedule(BUSY_MS);
        return;
      }
      fetch(rows.dataset.src, { headers: FETCH_HEADERS, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.status === 401) {
            window.location.reload(); // the session ended: the page redirects to the login
            return null;
          }
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          if (html === null) return;
          var template = document.createElement("template");
          template.innerHTML = html.trim();
          var fresh = template.content.querySelector("tbody#job-rows");
          if (fresh) current().replaceWith(fresh);
          schedule();
        })
        .catch(function () {
          schedule(IDLE_MS); // a transient error: try again later
        });
    }

    if (current()) schedule();
  }

  function viewerToggles() {
    var overlayToggle = document.getElementById("overlay-toggle");
    var overlay = document.getElementById("overlay-image");
    if (overlayToggle && overlay) {
      var syncOverlay = function () {
        overlay.classList.toggle("hidden", !overlayToggle.checked);
      };
      overlayToggle.addEventListener("change", syncOverlay);
      syncOverlay();
    }
    var roiToggle = document.getElementById("roi-toggle");
    var rois = document.getElementById("roi-layer");
    if (roiToggle && rois) {
      var syncRois = function () {
        rois.classList.toggle("hidden", !roiToggle.checked);
      };
      roiToggle.addEventListener("change", syncRois);
      syncRois();
    }
  }

  function autoRefresh() {
    var marker = document.querySelector("[data-auto-refresh]");
    if (!marker) return;
    var delay = parseInt(marker.getAttribute("data-auto-refresh"), 10) || BUSY_MS;
    var touched = false;
    // any input (the review form, the overlay toggle) stops the reloading
    document.addEventListener("input", function () { touched = true; });
    document.addEventListener("change", function () { touched = true; });
    setTimeout(function () {
      var active = document.activeElement;
      var editing = touched || (active && active.closest && active.closest("form"));
      if (editing) return; // never throw away what a moderator is typing
      window.location.reload();
    }, delay);
  }

  document.addEventListener("DOMContentLoaded", function () {
    liveRows();
    viewerToggles();
    autoRefresh();
  });
})();
