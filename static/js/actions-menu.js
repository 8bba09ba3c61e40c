/*
 * Row "Actions" menus (templates/_components.html actions_menu): a popover menu opened by its button. The browser
 * opens and light-dismisses it (popovertarget); this file places it beside its button inside the viewport, keeps
 * aria-expanded true while open, moves focus with the arrow keys, Home and End, and closes it once an item ran.
 */
(function () {
  'use strict';
  if (window.KinnektActionsMenu) {
    return;
  }
  window.KinnektActionsMenu = true;

  var GAP = 4;
  var MARGIN = 8;

  function items(menu) {
    return Array.prototype.slice.call(menu.querySelectorAll('[role="menuitem"]:not([disabled])'));
  }

  function toggleOf(menu) {
    return document.querySelector('[popovertarget="' + menu.id + '"]');
  }

  function place(menu, toggle) {
    var box = toggle.getBoundingClientRect();
    var width = menu.offsetWidth;
    var height = menu.offsetHeight;
    var left = Math.min(box.right - width, window.innerWidth - width - MARGIN);
    var top = box.bottom + GAP;
    if (top + height > window.innerHeight - MARGIN && box.top - GAP - height >= MARGIN) {
      top = box.top - GAP - height;  // no room below: open upwards
    }
    menu.style.left = Math.max(MARGIN, left) + 'px';
    menu.style.top = Math.max(MARGIN, top) + 'px';
  }

  document.addEventListener('toggle', function (evt) {
    var menu = evt.target;
    if (!(menu instanceof Element) || !menu.matches('.actions-menu__list')) {
      return;
    }
    var toggle = toggleOf(menu);
    var open = evt.newState === 'open';
    if (toggle) {
      toggle.setAttribute('aria-expanded', open ? 'true' : 'false');
    }
    if (open) {
      if (toggle) {
        place(menu, toggle);
      }
      var first = items(menu)[0];
      if (first) {
        first.focus();
      }
    }
  }, true);

  document.addEventListener('keydown', function (evt) {
    var target = evt.target instanceof Element ? evt.target : null;
    var menu = target && target.closest('.actions-menu__list');
    if (!menu) {
      return;
    }
    var list = items(menu);
    var at = list.indexOf(target);
    var next = null;
    if (evt.key === 'ArrowDown') {
      next = list[(at + 1) % list.length];
    } else if (evt.key === 'ArrowUp') {
      next = list[(at - 1 + list.length) % list.length];
    } else if (evt.key === 'Home') {
      next = list[0];
    } else if (evt.key === 'End') {
      next = list[list.length - 1];
    } else if (evt.key === 'Tab') {
      menu.hidePopover();
      return;
    }
    if (next) {
      evt.preventDefault();
      next.focus();
    }
  });

  // An item ran (a link followed, a request sent, a dialog asked for): the menu has done its job.
  document.addEventListener('click', function (evt) {
    var item = evt.target instanceof Element ? evt.target.closest('.actions-menu__list [role="menuitem"]') : null;
    if (item) {
      item.closest('.actions-menu__list').hidePopover();
    }
  });

  // Scrolling or resizing moves the button: close rather than leave the menu floating elsewhere.
  function closeAll() {
    var open = document.querySelectorAll('.actions-menu__list:popover-open');
    for (var i = 0; i < open.length; i++) {
      open[i].hidePopover();
    }
  }
  window.addEventListener('resize', closeAll);
  document.addEventListener('scroll', function (evt) {
    if (!(evt.target instanceof Element && evt.target.closest('.actions-menu__list'))) {
      closeAll();
    }
  }, true);
})();
