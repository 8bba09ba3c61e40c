/*
 * Campaigns pages: merge-tag buttons, the GSM-safe replacement and the suggested name in the composer, and the
 * dialogs (quick view, delete, end) that arrive in #campaign-dialog. Everything else is HTMX.
 */
(function () {
  'use strict';

  // Boosted navigation runs this file again with each campaigns page: listen once.
  if (window.__kinnektCampaigns) {
    return;
  }
  window.__kinnektCampaigns = true;

  function body() {
    return document.getElementById('campaign-body');
  }

  // The message textarea refreshes the live counter on `input`.
  function messageChanged(textarea) {
    textarea.dispatchEvent(new Event('input', { bubbles: true }));
  }

  function insertAtCursor(textarea, text) {
    var start = textarea.selectionStart == null ? textarea.value.length : textarea.selectionStart;
    var end = textarea.selectionEnd == null ? start : textarea.selectionEnd;
    textarea.value = textarea.value.slice(0, start) + text + textarea.value.slice(end);
    var caret = start + text.length;
    textarea.focus();
    textarea.setSelectionRange(caret, caret);
    messageChanged(textarea);
  }

  document.addEventListener('click', function (evt) {
    var target = evt.target instanceof Element ? evt.target : null;
    if (!target) {
      return;
    }
    var tag = target.closest('[data-insert-tag]');
    if (tag && body()) {
      insertAtCursor(body(), tag.getAttribute('data-insert-tag'));
      return;
    }
    var replace = target.closest('[data-replace-body]');
    if (replace && body()) {
      body().value = replace.getAttribute('data-replace-body');
      messageChanged(body());
      return;
    }
    var useName = target.closest('[data-use-name]');
    if (useName) {
      var name = document.getElementById('campaign-name');
      if (name) {
        name.value = useName.getAttribute('data-use-name');
        var suggestion = document.getElementById('campaign-name-suggestion');
        if (suggestion) {
          suggestion.replaceChildren();
        }
      }
    }
  });

  // The main button says what it will do: "Send now" or schedule, following the Sending time choice.
  function labelMainButton(choice) {
    var button = document.getElementById('campaign-schedule');
    var label = button && button.querySelector('span');
    if (label) {
      label.textContent = button.getAttribute(choice === 'now' ? 'data-label-now' : 'data-label-later');
    }
  }

  // The discount changes how long {discount_code} is: count the message again.
  document.addEventListener('change', function (evt) {
    var target = evt.target instanceof Element ? evt.target : null;
    if (target && target.matches('#campaign-send-time input[name="send"]') && target.checked) {
      labelMainButton(target.value);
    }
    if (target && target.closest('#campaign-discount')) {
      window.htmx.trigger(document.body, 'composer-changed');
    }
  });

  // Enter in the test phone field sends the test, not the whole form as a draft.
  document.addEventListener('keydown', function (evt) {
    var target = evt.target instanceof Element ? evt.target : null;
    if (evt.key === 'Enter' && target && target.matches('[data-test-phone]')) {
      evt.preventDefault();
      var button = document.getElementById('campaign-send-test');
      if (button) {
        button.click();
      }
    }
  });

  // A confirmation or quick view arrives as a <dialog> in #campaign-dialog: show it as a modal.
  document.addEventListener('htmx:afterSwap', function (evt) {
    var target = evt.detail.target;
    if (target && target.id === 'campaign-dialog') {
      var dialog = target.querySelector('dialog');
      if (dialog && !dialog.open && typeof dialog.showModal === 'function') {
        dialog.showModal();
      }
    }
  });
})();
