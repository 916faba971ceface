// Prefill the model upload form's input shapes with the names the chosen file's forward takes,
// before any upload: read the zip's central directory from the file's tail (File.slice), read
// only the small text members the engine's signature reader needs (TorchScript code/**/*.py,
// a .pt2's models/*.json), post them to the form's data-names-url and show the answer.
// Anything unusual (not a zip, too many or too large members, no single answer): no change.
(function () {
  "use strict";

  var EXTENSIONS = /\.(pt|pth|ts|zip|pt2)$/i;
  var MAX_MEMBER = 2 * 1024 * 1024;  // bytes, uncompressed
  var MAX_TOTAL = 4 * 1024 * 1024;
  var MAX_MEMBERS = 200;

  function bytes(file, start, end) {
    return file.slice(start, end).arrayBuffer().then(function (b) { return new DataView(b); });
  }

  function u64(view, at) {  // sizes and offsets below 2**53
    return view.getUint32(at, true) + view.getUint32(at + 4, true) * 4294967296;
  }

  // The central directory: where it starts, how long it is (zip64 when torch writes it).
  function directory(file) {
    var tailStart = Math.max(0, file.size - 65557);
    return bytes(file, tailStart, file.size).then(function (tail) {
      for (var i = tail.byteLength - 22; i >= 0; i--) {
        if (tail.getUint32(i, true) !== 0x06054b50) continue;
        var size = tail.getUint32(i + 12, true), offset = tail.getUint32(i + 16, true);
        if (size !== 0xffffffff && offset !== 0xffffffff) return { offset: offset, size: size };
        var locator = i - 20;
        if (locator < 0 || tail.getUint32(locator, true) !== 0x07064b50) return null;
        var record = u64(tail, locator + 8);
        return bytes(file, record, record + 56).then(function (z) {
          if (z.getUint32(0, true) !== 0x06064b50) return null;
          return { offset: u64(z, 48), size: u64(z, 40) };
        });
      }
      return null;
    });
  }

  function wanted(name) {
    var parts = name.split("/");
    return (parts.length > 2 && parts[1] === "code" && /\.py$/.test(name)) ||
      (parts.length === 3 && parts[1] === "models" && /\.json$/.test(name));
  }

  // The entries to read: name, method, compressed and plain size, local header offset.
  function entries(view) {
    var found = [], at = 0, decoder = new TextDecoder();
    while (at + 46 <= view.byteLength && view.getUint32(at, true) === 0x02014b50) {
      var nameLen = view.getUint16(at + 28, true), extraLen = view.getUint16(at + 30, true);
      var entry = { method: view.getUint16(at + 10, true),
        packed: view.getUint32(at + 20, true), size: view.getUint32(at + 24, true),
        offset: view.getUint32(at + 42, true),
        name: decoder.decode(new Uint8Array(view.buffer, view.byteOffset + at + 46, nameLen)) };
      var extra = at + 46 + nameLen, end = extra + extraLen;
      while (extra + 4 <= end) {  // zip64: the 0xffffffff fields, in this order
        var id = view.getUint16(extra, true), len = view.getUint16(extra + 2, true), p = extra + 4;
        if (id === 1) {
          ["size", "packed", "offset"].forEach(function (key) {
            if (entry[key] === 0xffffffff) { entry[key] = u64(view, p); p += 8; }
          });
        }
        extra += 4 + len;
      }
      if (wanted(entry.name)) found.push(entry);
      at = end + view.getUint16(at + 32, true);
    }
    return found;
  }

  function readMember(file, entry) {
    return bytes(file, entry.offset, entry.offset + 30).then(function (local) {
      if (local.getUint32(0, true) !== 0x04034b50) throw new Error("not a zip member");
      var start = entry.offset + 30 + local.getUint16(26, true) + local.getUint16(28, true);
      var blob = file.slice(start, start + entry.packed);
      if (entry.method === 0) return blob.text();
      if (entry.method !== 8) throw new Error("unknown compression");
      var stream = blob.stream().pipeThrough(new DecompressionStream("deflate-raw"));
      return new Response(stream).text();
    });
  }

  function members(file) {
    return directory(file).then(function (dir) {
      if (!dir || dir.size > 16 * 1024 * 1024) return null;
      return bytes(file, dir.offset, dir.offset + dir.size).then(function (view) {
        var list = entries(view), total = 0;
        if (!list.length || list.length > MAX_MEMBERS) return null;
        for (var i = 0; i < list.length; i++) {
          if (list[i].size > MAX_MEMBER) return null;
          total += list[i].size;
        }
        if (total > MAX_TOTAL) return null;
        return Promise.all(list.map(function (e) { return readMember(file, e); })).then(
          function (texts) {
            var out = {};
            list.forEach(function (e, i) { out[e.name] = texts[i]; });
            return out;
          });
      });
    });
  }

  function show(form, answer) {
    var field = form.querySelector("textarea[name=input_shapes]");
    if (!field || !answer || !answer.names) return;
    field.placeholder = answer.placeholder;
    if (!field.value.trim() && answer.fill) field.value = answer.fill;
    var hint = form.querySelector("[data-forward-hint]");
    if (!hint) {
      hint = document.createElement("small");
      hint.setAttribute("data-forward-hint", "");
      hint.setAttribute("data-testid", "forward-hint");
      field.insertAdjacentElement("afterend", hint);
    }
    hint.textContent = answer.hint;
  }

  function prefill(input) {
    var form = input.form;
    if (input.type !== "file" || !form || !form.dataset.namesUrl) return;
    var file = input.files && input.files[0];
    if (!file || !EXTENSIONS.test(file.name) || !window.DecompressionStream) return;
    var token = form.querySelector("input[name=csrfmiddlewaretoken]");
    members(file).then(function (found) {
      if (!found) return null;
      return fetch(form.dataset.namesUrl, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": token ? token.value : "" },
        body: JSON.stringify({ members: found }),
      }).then(function (r) { return r.ok ? r.json() : null; });
    }).then(function (answer) { show(form, answer); }).catch(function () { /* no change */ });
  }

  document.addEventListener("change", function (event) { prefill(event.target); });
  // A file chosen before this (deferred) script ran, or kept by the browser when the page is
  // shown again, fired its change event before anyone listened: read it now.
  document.querySelectorAll("form[data-names-url] input[type=file]").forEach(function (input) {
    if (input.files && input.files.length) prefill(input);
  });
})();
