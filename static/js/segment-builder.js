/*
 * Segments pages: removing rules, groups and picked products in the builder, browsing products and collections
 * for a rule (Shopify's resource picker inside the admin, the catalog picker dialog elsewhere), opening the
 * delete dialog, and CSV downloads inside the Shopify admin. Loaded by the segments templates; everything else
 * is HTMX.
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

  // --- choosing products and collections ------------------------------------------------------------------

  var GID_TYPES = { products: 'Product', collections: 'Collection' };
  var NOUNS = { products: 'product', collections: 'collection' };
  var browsing = null; // the Browse button whose rule the catalog picker dialog adds to

  function pickedIds(key) {
    var list = document.getElementById('picked-' + key);
    if (!list) {
      return [];
    }
    return Array.prototype.map.call(list.querySelectorAll('input[type=hidden]'), function (input) {
      return input.value;
    });
  }

  // One chosen item becomes a tag through the server (which checks it is the shop's and knows its title);
  // an item already chosen answers 204 and nothing changes.
  function addPicked(browse, id) {
    var key = browse.getAttribute('data-key');
    var params = new URLSearchParams({ key: key, id: id });
    pickedIds(key).forEach(function (value) {
      params.append('rule-' + key + '-value', value);
    });
    return window.htmx.ajax('GET', browse.getAttribute('data-pick-url') + '?' + params.toString(),
      { target: '#picked-' + key, swap: 'beforeend' });
  }

  function removePicked(key, id) {
    var list = document.getElementById('picked-' + key);
    var input = list && list.querySelector('input[type=hidden][value="' + id + '"]');
    var tag = input && input.closest('[data-tag]');
    if (tag) {
      tag.remove();
    }
  }

  // Inside the admin: Shopify's own picker, opened on what the rule already holds. Its answer is the whole
  // choice: new items are added, items taken out of it are removed; cancelling changes nothing.
  function browseInAdmin(browse, kind) {
    var key = browse.getAttribute('data-key');
    var type = GID_TYPES[kind];
    var current = pickedIds(key);
    window.shopify.resourcePicker({
      type: NOUNS[kind],
      multiple: true,
      selectionIds: current.map(function (id) { return { id: 'gid://shopify/' + type + '/' + id }; })
    }).then(function (selection) {
      if (!selection) {
        return;
      }
      var chosen = selection.map(function (item) { return String(item.id).split('/').pop(); })
        .filter(function (id) { return /^[0-9]+$/.test(id); });
      current.filter(function (id) { return chosen.indexOf(id) < 0; }).forEach(function (id) {
        removePicked(key, id);
      });
      rulesChanged();
      chosen.filter(function (id) { return current.indexOf(id) < 0; }).reduce(function (previous, id) {
        return previous.then(function () { return addPicked(browse, id); });
      }, Promise.resolve());
    });
  }

  function searchCatalog(query) {
    if (!browsing) {
      return;
    }
    var params = new URLSearchParams({ target: 'catalog-picker-results', q: query || '' });
    window.htmx.ajax('GET', browsing.getAttribute('data-search-url') + '?' + params.toString(),
      { target: '#catalog-picker-results', swap: 'outerHTML' });
  }

  // Elsewhere (the demo): the catalog picker dialog, searching and paging the synced catalog.
  function browseInDialog(browse, kind) {
    var dialog = document.getElementById('catalog-picker');
    if (!dialog) {
      return;
    }
    browsing = browse;
    document.getElementById('catalog-picker-title').textContent = 'Choose ' + kind;
    var search = document.getElementById('catalog-picker-search');
    search.value = '';
    search.setAttribute('placeholder', 'Search ' + kind);
    search.setAttribute('aria-label', 'Search ' + kind);
    searchCatalog('');
    dialog.showModal();
    search.focus();
  }

  var searchTimer = null;
  document.addEventListener('input', function (evt) {
    if (evt.target && evt.target.id === 'catalog-picker-search') {
      window.clearTimeout(searchTimer);
      searchTimer = window.setTimeout(function () { searchCatalog(evt.target.value); }, 300);
    }
  });

  // Results already on the rule show as chosen.
  document.addEventListener('htmx:afterSettle', function (evt) {
    var results = document.getElementById('catalog-picker-results');
    if (!browsing || !results || !results.contains(evt.detail.elt) && evt.detail.elt !== results) {
      return;
    }
    var chosen = pickedIds(browsing.getAttribute('data-key'));
    Array.prototype.forEach.call(results.querySelectorAll('[data-catalog-id]'), function (choice) {
      choice.setAttribute('aria-pressed', chosen.indexOf(choice.getAttribute('data-catalog-id')) >= 0 ? 'true' : 'false');
    });
  });

  document.addEventListener('click', function (evt) {
    var target = evt.target instanceof Element ? evt.target : null;
    if (!target) {
      return;
    }
    var browse = target.closest('[data-browse]');
    if (browse) {
      var kind = browse.getAttribute('data-browse');
      var embedded = document.documentElement.hasAttribute('data-embedded');
      if (embedded && window.shopify && typeof window.shopify.resourcePicker === 'function') {
        browseInAdmin(browse, kind);
      } else {
        browseInDialog(browse, kind);
      }
      return;
    }
    var choice = target.closest('#catalog-picker [data-catalog-id]');
    if (choice && browsing) {
      var id = choice.getAttribute('data-catalog-id');
      if (choice.getAttribute('aria-pressed') === 'true') {
        removePicked(browsing.getAttribute('data-key'), id);
        choice.setAttribute('aria-pressed', 'false');
        rulesChanged();
      } else {
        choice.setAttribute('aria-pressed', 'true');
        addPicked(browsing, id);
      }
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
