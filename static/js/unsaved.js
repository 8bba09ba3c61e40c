/*
 * Unsaved changes: the segment builder, the campaign composer and the settings cards do not lose an edit
 * silently.
 *
 * A guarded form is `form[data-unsaved]`, or any form inside `[data-unsaved-forms]` (the settings cards). Its
 * values are remembered when it arrives; it holds unsaved changes while they differ (search boxes do not count),
 * or when it arrives showing errors (a save the server refused). While any guarded form holds changes:
 *   - a save bar shows: App Bridge's contextual save bar (`<ui-save-bar>`, shopify.saveBar) when embedded in
 *     the admin, which also asks before the admin navigates away; the page's own sticky bar in the demo;
 *   - Save saves every changed form (the button its `data-unsaved-submit` names, else a submit), so saving
 *     one settings card never drops another card's edits; Discard reloads the page's content from the server;
 *   - in-app navigation (boosted links) asks first, and leaving the page (reload, close) asks the browser's
 *     own question.
 */
(function () {
  'use strict';

  var htmx = window.htmx;
  var BAR_ID = 'unsaved-save-bar';
  var LEAVE_QUESTION = 'Leave this page? Your unsaved changes will be lost.';
  var GUARDED = 'form[data-unsaved], [data-unsaved-forms] form';
  var ERRORS = '[aria-invalid="true"], .field--error, [data-unsaved-kept]';
  var SKIPPED_TYPES = ['search', 'button', 'submit', 'reset', 'file', 'image'];

  var baselines = new WeakMap();
  var barShown = false;

  function appBridgeSaveBar() {
    var shopify = window.shopify;
    var embedded = document.documentElement.hasAttribute('data-embedded');
    return embedded && shopify && shopify.saveBar ? shopify.saveBar : null;
  }

  // The form's values as one string: checkboxes and radios by whether they are checked, selects by what is
  // chosen, other fields by their text. Fields outside the merchant's edits (search boxes) are left out.
  // With `asDelivered`, the values the page's HTML gave the fields (defaultValue, defaultChecked,
  // defaultSelected) instead of their current ones.
  function snapshot(form, asDelivered) {
    var parts = [];
    Array.prototype.forEach.call(form.elements, function (field) {
      if (!field.name || field.disabled || SKIPPED_TYPES.indexOf(field.type) >= 0) {
        return;
      }
      if (field.type === 'checkbox' || field.type === 'radio') {
        parts.push(field.name + '=' + field.value + ':' + (asDelivered ? field.defaultChecked : field.checked));
      } else if (field.tagName === 'SELECT') {
        selectedAsDelivered(field, asDelivered).forEach(function (option) {
          parts.push(field.name + '=' + option.value);
        });
      } else {
        parts.push(field.name + '=' + (asDelivered ? field.defaultValue : field.value));
      }
    });
    return parts.join('\n');
  }

  // A select's chosen options, now or as delivered: a single select with no option marked selected shows its
  // first enabled option.
  function selectedAsDelivered(select, asDelivered) {
    if (!asDelivered) {
      return Array.prototype.slice.call(select.selectedOptions);
    }
    var options = Array.prototype.filter.call(select.options, function (option) { return option.defaultSelected; });
    if (!options.length && !select.multiple) {
      options = Array.prototype.filter.call(select.options, function (option) { return !option.disabled; })
        .slice(0, 1);
    }
    return options.slice(select.multiple ? 0 : -1);
  }

  function guardedForms() {
    return Array.prototype.slice.call(document.querySelectorAll(GUARDED));
  }

  // A form seen for the first time: remember what it holds (null: it arrived with unsaved changes). When the
  // merchant's own typing is what shows it first (htmx sets swapped-in content up a moment after the swap, and
  // a quick edit can come before), what it holds is already edited: remember what it arrived with instead.
  function remember(byEdit) {
    guardedForms().forEach(function (form) {
      if (!baselines.has(form)) {
        baselines.set(form, form.querySelector(ERRORS) ? null : snapshot(form, byEdit));
      }
    });
  }

  function isChanged(form) {
    var baseline = baselines.get(form);
    return baseline === null || (baseline !== undefined && snapshot(form) !== baseline);
  }

  function changedForms() {
    return guardedForms().filter(isChanged);
  }

  function showBar(show) {
    var saveBar = appBridgeSaveBar();
    if (saveBar) {
      if (show !== barShown) {
        (show ? saveBar.show(BAR_ID) : saveBar.hide(BAR_ID));
      }
      barShown = show;
      return;
    }
    barShown = show;
    var bar = document.getElementById(BAR_ID);
    if (bar) {
      bar.hidden = !show;
      document.documentElement.classList.toggle('has-save-bar', show); // the page moves down, nothing is covered
    }
  }

  function refresh(evt) {
    remember(Boolean(evt && (evt.type === 'input' || evt.type === 'change')));
    showBar(changedForms().length > 0);
  }

  function save() {
    changedForms().forEach(function (form) {
      var selector = form.getAttribute('data-unsaved-submit');
      var button = selector ? form.querySelector(selector) : null;
      if (button) {
        button.click();
      } else if (typeof form.requestSubmit === 'function') {
        form.requestSubmit();
      } else {
        htmx.trigger(form, 'submit');
      }
    });
  }

  // Discard: the page's content again as the server has it (its forms arrive unchanged).
  function discard() {
    changedForms().forEach(function (form) {
      baselines.set(form, snapshot(form));
    });
    showBar(false);
    htmx.ajax('GET', window.location.pathname + window.location.search, { target: '#main', swap: 'innerHTML' });
  }

  document.addEventListener('click', function (evt) {
    var target = evt.target instanceof Element ? evt.target : null;
    if (target && target.closest('[data-unsaved-save]')) {
      save();
      return;
    }
    if (target && target.closest('[data-unsaved-discard]')) {
      discard();
      return;
    }
    // A click can remove a rule, a group or a picked product without any input event.
    window.setTimeout(refresh, 0);
  });

  document.addEventListener('input', refresh);
  document.addEventListener('change', refresh);
  document.addEventListener('segment-rules-changed', refresh);
  document.addEventListener('DOMContentLoaded', refresh);
  document.addEventListener('htmx:afterSettle', refresh);
  document.addEventListener('htmx:load', refresh);

  // In-app navigation (boosted links, the menu) asks before unsaved changes are dropped.
  document.addEventListener('htmx:beforeRequest', function (evt) {
    if (!evt.detail.boosted || !changedForms().length) {
      return;
    }
    if (!window.confirm(LEAVE_QUESTION)) {
      evt.preventDefault();
      return;
    }
    showBar(false);
  });

  // Leaving the page itself (reload, close, a full navigation): the browser asks.
  window.addEventListener('beforeunload', function (evt) {
    if (changedForms().length) {
      evt.preventDefault();
      evt.returnValue = LEAVE_QUESTION;
    }
  });
})();
