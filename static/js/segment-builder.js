/*
 * Segments pages: removing rules, groups and picked products in the builder, opening the delete dialog,
 * and CSV downloads inside the Shopify admin. Loaded by the segments templates; everything else is HTMX.
 */
(function () {
  'use strict';

  // Boosted navigation runs this file again with each segments page: listen once.
  if (window.__kinnektSegments) {
    return;
  }
  window.__kinnektSegments = true;

  var RULES_CHANGED = 'segment-rules-changed';

  // The builder form refreshes its preview on this event (hx-trigger "... from:body").
  function rulesChanged() {
    window.htmx.trigger(document.body, RULES_CHANGED);
  }

  document.addEventListener('click', function (evt) {
    var target = evt.target instanceof Element ? evt.target : null;
    if (!target) {
      return;
    }
    var removeNode = target.closest('[data-remove-node]');
    if (removeNode) {
      var node = removeNode.closest('[data-node]');
      if (node) {
        node.remove();
        rulesChanged();
      }
      return;
    }
    var removeTag = target.closest('[data-remove-tag]');
    if (removeTag) {
      var tag = removeTag.closest('[data-tag]');
      if (tag) {
        tag.remove();
        rulesChanged();
      }
      return;
    }
    // Inside the admin a plain link carries no session token: add a fresh one to the download URL.
    var download = target.closest('[data-download]');
    if (download && window.shopify && typeof window.shopify.idToken === 'function') {
      evt.preventDefault();
      var href = download.getAttribute('href');
      window.shopify.idToken().then(function (token) {
        window.location.assign(href + (href.indexOf('?') < 0 ? '?' : '&') + 'id_token=' + encodeURIComponent(token));
      });
    }
  });

  // The delete confirmation arrives as a <dialog> in #segment-dialog: show it as a modal.
  document.addEventListener('htmx:afterSwap', function (evt) {
    var target = evt.detail.target;
    if (target && target.id === 'segment-dialog') {
      var dialog = target.querySelector('dialog');
      if (dialog && !dialog.open && typeof dialog.showModal === 'function') {
        dialog.showModal();
      }
    }
  });
})();
