// keygate console: small niceties on top of pages that work without script.
// Loaded from the console itself (the Content-Security-Policy allows no
// inline or third-party script).
(function () {
  "use strict";

  function each(sel, fn) {
    Array.prototype.forEach.call(document.querySelectorAll(sel), fn);
  }

  // Copy buttons: copy the text of the element they name, and say so.
  each("[data-copy]", function (btn) {
    var target = document.getElementById(btn.getAttribute("data-copy"));
    var say = document.querySelector('[data-copied-for="' + btn.getAttribute("data-copy") + '"]');
    if (!target || !navigator.clipboard) return;
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var text = target.value !== undefined ? target.value : target.textContent;
      navigator.clipboard.writeText(text).then(function () {
        // A live region announces a change: a second copy says so anew.
        if (say) say.textContent = say.textContent === "Copied." ? "Copied again." : "Copied.";
      }, function () {
        if (target.select) target.select();
        if (say) say.textContent = "Copying was blocked: select the text and copy it yourself.";
      });
    });
  });

  // Exact times are written in UTC, the server knowing no reader's zone;
  // a reader elsewhere gets their own time first ("1 Dec 2026, 21:49
  // GMT+1; 1 Dec 2026 20:49 UTC"), on hover and beside an expiry alike.
  var zone = window.Intl ? Intl.DateTimeFormat().resolvedOptions().timeZone : "UTC";
  if (zone && zone !== "UTC" && zone !== "Etc/UTC") {
    var local = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric",
      hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
    var both = function (iso, utc) {
      var d = new Date(iso);
      return isNaN(d.getTime()) ? utc : local.format(d) + "; " + utc;
    };
    each("time[datetime][title]", function (el) { el.title = both(el.getAttribute("datetime"), el.title); });
    each("[data-exact]", function (el) {
      el.textContent = "(" + both(el.getAttribute("data-exact"), el.textContent.replace(/^\(|\)$/g, "")) + ")";
    });
  }

  // A form that changes something is sent once. A double click sends it
  // twice and the browser shows only the second answer: a second key
  // nobody saw ("Create key"), or "already rotated" in place of the new
  // key, which is then never shown ("Rotate"). Until the next page, later
  // submits are dropped. The form sends again once its page is evidently
  // staying: the person stopped the navigation (Esc, the Stop button) or
  // it failed without a page of its own, which the Navigation API reports
  // as navigateerror (a page that does arrive ends this one, so nothing
  // else fires it). A browser without that API counts Esc and, failing
  // that, 10 seconds. A page back from the back-forward cache sends again.
  var sent = [];
  var release = function () { sent = []; };
  each('form[method="post"]', function (form) {
    form.addEventListener("submit", function (e) {
      if (e.defaultPrevented) return;
      if (sent.indexOf(form) >= 0) {
        e.preventDefault();
        return;
      }
      sent.push(form);
      if (!window.navigation) {
        setTimeout(function () { sent = sent.filter(function (f) { return f !== form; }); }, 10000);
      }
    });
  });
  if (window.navigation) window.navigation.addEventListener("navigateerror", release);
  else document.addEventListener("keydown", function (e) { if (e.key === "Escape") release(); });
  window.addEventListener("pageshow", release);

  // A shown key must not come back from the browser's back-forward cache:
  // wipe it when the page is left.
  window.addEventListener("pagehide", function () {
    each("[data-secret]", function (el) {
      if (el.tagName === "INPUT" || el.tagName === "TEXTAREA") el.value = "";
      else el.textContent = "";
    });
  });
  // A page the browser brings back (Back, Forward) from its back-forward
  // cache shows a key as it was: "Active" with its revoke form after it was
  // revoked, a list from before a change. A page that answered a GET is
  // loaded again; one that answered a form (a refused form) keeps what the
  // person typed.
  window.addEventListener("pageshow", function (e) {
    if (e.persisted && (document.body.hasAttribute("data-fresh") || document.querySelector("[data-secret]"))) window.location.reload();
  });

  // A whole key pasted into the search would go into the page's URL, and
  // so into access logs: only its hint (prefix, env and 8 characters, what
  // the list shows) is sent, which finds it as well. The field's pattern
  // refuses a whole key, so that a browser without this script does not
  // send one; the browser checks it before the form's submit event, so the
  // key is cut where the check fails, and the search sent again.
  each("#q", function (input) {
    if (!input.form) return;
    var cut = function () {
      var m = /([a-z][a-z0-9]{1,9}_(?:live|test)_[0-9A-Za-z]{8})[0-9A-Za-z]{35,}/.exec(input.value);
      if (m) input.value = m[1];
      return !!m;
    };
    input.form.addEventListener("submit", cut);
    input.addEventListener("invalid", function (e) {
      if (!cut()) return; // something else key-shaped: the browser says what it wants
      e.preventDefault();
      setTimeout(function () { input.form.requestSubmit(); }, 0);
    });
  });

  // A date typed for the expiry chooses "On a date": a date beside another
  // choice is refused by the server, which a click here spares.
  each("#expires-date", function (input) {
    input.addEventListener("input", function () {
      var onDate = input.form && input.form.querySelector('input[name="expires"][value="date"]');
      if (onDate && input.value) onDate.checked = true;
    });
  });

  // Rotate: "Yes, stop the old key now" confirms "Stop it now" and nothing
  // else, so it is shown only with that choice (and unticked when hidden,
  // which the server would refuse beside a grace period). Without script
  // it is always there, and the server checks the two agree.
  each("#grace", function (select) {
    var box = document.getElementById("stop-now");
    var choice = document.getElementById("stop-now-choice");
    if (!box || !choice) return;
    var sync = function () {
      choice.hidden = select.value !== "0";
      if (choice.hidden) box.checked = false;
    };
    select.addEventListener("change", sync);
    sync();
  });

  // Bulk revoke: the button says how many keys are ticked, as they are
  // ticked. A key listed in two sections is one key: its boxes tick
  // together.
  each("#bulk", function (form) {
    var btn = document.getElementById("bulk-submit");
    var say = document.getElementById("bulk-count");
    var boxes = form.querySelectorAll('input[type=checkbox][name=id]');
    var update = function () {
      var seen = {}, n = 0;
      Array.prototype.forEach.call(boxes, function (b) {
        if (b.checked && !seen[b.value]) { seen[b.value] = true; n++; }
      });
      var keys = n === 1 ? "1 key" : n.toLocaleString("en") + " keys";
      if (btn) btn.textContent = n ? "Revoke " + keys : "Revoke ticked keys";
      if (say) say.textContent = n ? keys + " ticked." : "No keys ticked.";
    };
    Array.prototype.forEach.call(boxes, function (b) {
      b.addEventListener("change", function () {
        Array.prototype.forEach.call(boxes, function (o) { if (o.value === b.value) o.checked = b.checked; });
        update();
      });
    });
    update();
  });

  // A form that came back with an error shows it: the error may sit below
  // the fold of a long page (a key's page), and a screen reader starts there.
  // Otherwise the message of an action just done (saved, revoked) is where
  // focus starts, so it is read out.
  var shown = document.querySelector("main .error[role=alert]") || document.querySelector("main .notice[role=status], main .warning[role=status]");
  if (shown) {
    shown.setAttribute("tabindex", "-1");
    shown.scrollIntoView({ block: "center" });
    shown.focus({ preventScroll: true });
  }

  // A new key: focus starts on it, selected, so Ctrl+C copies it at once
  // and a screen reader reads it with its warning, rather than the page
  // starting at its top, six Tabs from the key.
  var secret = document.getElementById("secret");
  if (!shown && secret && secret.value && secret.select) {
    secret.focus({ preventScroll: true });
    secret.select();
  }

  // The error summary's links go to their field. Followed with Enter, the
  // browser moves focus on keydown, and the key's keypress then lands in
  // the field and submits the form again: the field is focused on keyup
  // instead. A field inside a closed section (Limits) opens it first.
  function goTo(link) {
    var field = document.getElementById(link.getAttribute("href").slice(1));
    if (!field) return;
    for (var d = field.closest("details"); d; d = d.parentElement && d.parentElement.closest("details")) d.open = true;
    field.scrollIntoView({ block: "center" });
    field.focus({ preventScroll: true });
  }
  each('.error a[href^="#"]', function (link) {
    link.addEventListener("click", function (e) { e.preventDefault(); goTo(link); });
    link.addEventListener("keydown", function (e) { if (e.key === "Enter") e.preventDefault(); });
    link.addEventListener("keyup", function (e) { if (e.key === "Enter") goTo(link); });
  });

  // Typed confirmations: the button works once the text matches (the
  // server checks again).
  each("[data-confirm]", function (input) {
    var btn = document.getElementById(input.getAttribute("data-confirm-button"));
    if (!btn) return;
    // Runs of spaces count as one, as the page shows them (and the server
    // compares them).
    var spaced = function (s) { return s.trim().split(/\s+/).join(" "); };
    var want = spaced(input.getAttribute("data-confirm"));
    var fold = input.hasAttribute("data-confirm-anycase");
    var check = function () {
      var got = spaced(input.value);
      btn.disabled = fold ? got.toLowerCase() !== want.toLowerCase() : got !== want;
    };
    input.addEventListener("input", check);
    check();
  });
})();
