/*
 * Kinnekt page behaviour: toasts, dialogs, the global error region. All JavaScript lives in files like
 * this one (no inline scripts or on* attributes), so a strict Content-Security-Policy can forbid inline code.
 */
(function () {
  'use strict';

  var htmx = window.htmx;
  var ERROR_REGION_ID = 'global-error';

  // Inside the Shopify admin (base.html marks it) App Bridge draws the toasts and the title bar.
  function appBridge() {
    return document.documentElement.hasAttribute('data-embedded') && window.shopify ? window.shopify : null;
  }

  // A back/forward miss in htmx's history cache becomes a full page load, which authenticates afresh.
  htmx.config.refreshOnHistoryMiss = true;

  // Runs after response-targets (it sits on <html>, outside <body>): an error routed to the global region
  // is put inside it, whatever hx-swap / hx-select the requesting element inherits.
  htmx.defineExtension('error-region', {
    onEvent: function (name, evt) {
      if (name === 'htmx:beforeSwap' && evt.detail.target && evt.detail.target.id === ERROR_REGION_ID) {
        evt.detail.swapOverride = 'innerHTML';
        evt.detail.selectOverride = 'unset';
      }
      return true;
    }
  });

  function errorRegion() {
    return document.getElementById(ERROR_REGION_ID);
  }

  function clearError() {
    var region = errorRegion();
    if (region) {
      region.replaceChildren();
    }
  }

  // --- toasts -------------------------------------------------------------------------------------------

  function showToast(message, isError) {
    if (!message) {
      return;
    }
    var shopify = appBridge();
    if (shopify && shopify.toast) {
      shopify.toast.show(message, { isError: !!isError });
      return;
    }
    var region = document.getElementById('toasts');
    if (!region) {
      return;
    }
    var toast = document.createElement('div');
    toast.className = 'toast' + (isError ? ' toast--error' : '');
    toast.setAttribute('role', isError ? 'alert' : 'status');
    var text = document.createElement('span');
    text.className = 'toast__message';
    text.textContent = message;
    var close = document.createElement('button');
    close.type = 'button';
    close.className = 'toast__close';
    close.setAttribute('aria-label', 'Dismiss');
    close.setAttribute('data-toast-close', '');
    var icon = document.createElement('span');
    icon.className = 'icon icon--x';
    icon.setAttribute('aria-hidden', 'true');
    close.appendChild(icon);
    toast.append(text, close);
    region.appendChild(toast);
    window.setTimeout(function () { toast.remove(); }, isError ? 8000 : 5000);
  }

  // hx.toast(response, message) sends HX-Trigger: {"toast": {"message": ..., "isError": ...}}.
  // --- leaving for Shopify's pages (billing approval) ------------------------------------------------------
  // Shopify's approval page cannot be framed: it opens in the whole browser window, not the admin's iframe
  // (App Bridge takes window.open(url, '_top') in the embedded admin).
  // The event comes while htmx still handles the response (htmx settles at once: defaultSettleDelay 0); leaving in
  // the same task would abort the request that brought it, so the window leaves in the next task.
  document.addEventListener('kinnekt:open-top', function (evt) {
    var url = evt.detail && evt.detail.url;
    if (typeof url === 'string' && /^https?:\/\//.test(url)) {
      window.setTimeout(function () { window.open(url, '_top'); }, 0);
    }
  });

  document.addEventListener('toast', function (evt) {
    var detail = evt.detail || {};
    showToast(detail.message || detail.value, detail.isError);
  });

  // --- dialogs and dismiss buttons ----------------------------------------------------------------------

  document.addEventListener('click', function (evt) {
    var target = evt.target instanceof Element ? evt.target : null;
    if (!target) {
      return;
    }
    var opener = target.closest('[data-dialog-open]');
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute('data-dialog-open'));
      if (dialog && typeof dialog.showModal === 'function') {
        dialog.showModal();
      }
      return;
    }
    if (target.closest('[data-dialog-close]')) {
      var open = target.closest('dialog');
      if (open) {
        open.close();
      }
      return;
    }
    if (target.matches('dialog[open]')) {
      target.close(); // a click on the backdrop
      return;
    }
    if (target.closest('[data-history-back]')) {
      // The error page's "Go back": the previous page, or Home when it was opened directly.
      if (window.history.length > 1) {
        window.history.back();
      } else {
        window.location.assign(document.getElementById('error-page-home').getAttribute('href'));
      }
      return;
    }
    if (target.closest('[data-dismiss-error]')) {
      clearError();
      return;
    }
    var toastClose = target.closest('[data-toast-close]');
    if (toastClose) {
      toastClose.closest('.toast').remove();
    }
  });

  // The confirm button of a modal closes its dialog once its request succeeded.
  document.addEventListener('htmx:afterRequest', function (evt) {
    var elt = evt.detail.elt;
    if (evt.detail.successful && elt && elt.closest) {
      var dialog = elt.closest('dialog[open]');
      if (dialog && !dialog.hasAttribute('data-dialog-stay')) { // a picker dialog stays open while browsing
        dialog.close();
      }
    }
  });

  // --- navigation drawer (narrow screens, outside the admin) ---------------------------------------------

  function setNavOpen(open) {
    var frame = document.querySelector('.frame');
    var toggle = document.querySelector('[data-nav-toggle]');
    if (!frame || !toggle) {
      return;
    }
    frame.classList.toggle('frame--nav-open', open);
    toggle.setAttribute('aria-expanded', open ? 'true' : 'false');
    if (open) {
      var current = document.querySelector('#app-nav [aria-current="page"]') ||
        document.querySelector('#app-nav a');
      if (current) {
        current.focus();
      }
    }
  }

  document.addEventListener('click', function (evt) {
    var target = evt.target instanceof Element ? evt.target : null;
    if (!target) {
      return;
    }
    if (target.closest('[data-nav-toggle]')) {
      setNavOpen(!document.querySelector('.frame--nav-open'));
    } else if (target.matches('.frame--nav-open') || target.closest('#app-nav a')) {
      setNavOpen(false); // the backdrop, or a link was chosen
    }
  });

  document.addEventListener('keydown', function (evt) {
    if (evt.key === 'Escape' && document.querySelector('.frame--nav-open')) {
      setNavOpen(false);
      var toggle = document.querySelector('[data-nav-toggle]');
      if (toggle) {
        toggle.focus();
      }
    }
  });

  // --- the admin's title bar (embedded) -----------------------------------------------------------------

  // ui.page_header renders <ui-title-bar title="…"> when embedded; its actions (links and buttons, some
  // carrying htmx attributes) stay in the page, hidden, and the title bar gets a button for each that clicks it.
  function fillTitleBars() {
    Array.prototype.forEach.call(document.querySelectorAll('ui-title-bar[data-page-actions]'), function (bar) {
      var actions = document.getElementById(bar.getAttribute('data-page-actions'));
      if (bar.hasAttribute('data-filled') || !actions) {
        return;
      }
      bar.setAttribute('data-filled', '');
      var primary = false;
      Array.prototype.forEach.call(actions.querySelectorAll('a, button'), function (action) {
        var button = document.createElement('button');
        button.textContent = action.textContent.trim();
        if (!primary && action.classList.contains('button--primary')) {
          button.setAttribute('variant', 'primary');
          primary = true;
        }
        if (action.classList.contains('button--critical')) {
          button.setAttribute('tone', 'critical');
        }
        if (action.disabled) {
          button.disabled = true;
        }
        button.addEventListener('click', function () { action.click(); });
        bar.appendChild(button);
      });
    });
  }

  if (appBridge()) {
    document.addEventListener('DOMContentLoaded', fillTitleBars);
    document.addEventListener('htmx:load', fillTitleBars);
  }

  // --- parts of an answer for elsewhere in the page ---------------------------------------------------------

  // An answer may carry fresh copies of other parts of the page in a <template data-swap-by-id>: each of its
  // elements replaces the page's element with the same id, when the page still has one. (htmx's hx-swap-oob
  // logs an error for a part that is gone: a rule removed, or the page left, while the answer was on its way.)
  function swapById() {
    var templates = document.querySelectorAll('template[data-swap-by-id]');
    Array.prototype.forEach.call(templates, function (template) {
      Array.prototype.forEach.call(template.content.children, function (fresh) {
        var current = fresh.id ? document.getElementById(fresh.id) : null;
        if (current) {
          var copy = fresh.cloneNode(true);
          current.replaceWith(copy);
          htmx.process(copy);
        }
      });
      template.remove();
    });
  }
  document.addEventListener('htmx:afterSwap', swapById);
  document.addEventListener('htmx:afterSettle', swapById);

  // --- errors -------------------------------------------------------------------------------------------

  // Something the merchant did (not a poller) starts afresh: the previous error goes away.
  document.addEventListener('htmx:beforeRequest', function (evt) {
    var config = evt.detail.requestConfig;
    var cause = config && config.triggeringEvent;
    if (cause && cause.isTrusted) {
      clearError();
    }
  });

  // The region sits above the page: bring a new error into view.
  document.addEventListener('htmx:afterSwap', function (evt) {
    var region = errorRegion();
    if (region && evt.detail.target === region && region.firstElementChild) {
      region.scrollIntoView({ block: 'nearest' });
    }
  });

  // No response at all (offline, server down).
  document.addEventListener('htmx:sendError', function () {
    showToast('Kinnekt could not be reached. Check your connection and try again.', true);
  });

  // An error response that no hx-target-* took.
  document.addEventListener('htmx:responseError', function (evt) {
    var status = evt.detail.xhr ? evt.detail.xhr.status : 0;
    showToast('Something went wrong (' + status + '). Please try again.', true);
  });
})();
