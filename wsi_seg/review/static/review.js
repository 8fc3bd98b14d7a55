/* wsi-seg review page: an OpenSeadragon viewer of a slide with its label mask.
 *
 * The slide is a DeepZoom pyramid of JPEG tiles. The mask tiles are scripts that
 * hand over class ids (deflate + base64); they are coloured here, so hiding a class
 * only re-colours tiles already loaded. Names only ever reach the page as text.
 */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("review-data").textContent);
  var pyramid = data.pyramid;
  var visible = {};
  data.classes.forEach(function (c) { visible[c.label] = c.visible; });
  var version = 0;
  var tileData = new Map();   // key -> Promise of {width, height, ids}
  var waiting = new Map();    // key -> resolve function of a script being loaded
  var viewer = null;
  var maskItem = null;

  window.wsiReviewTile = function (key, width, height, base64) {
    var resolve = waiting.get(key);
    if (resolve) {
      waiting.delete(key);
      resolve({ width: width, height: height, base64: base64 });
    }
  };

  function loadScript(key, src) {
    return new Promise(function (resolve, reject) {
      waiting.set(key, resolve);
      var script = document.createElement("script");
      script.src = src;
      script.onload = function () {
        script.remove();
        if (waiting.has(key)) {
          waiting.delete(key);
          reject(new Error("no mask data in " + src));
        }
      };
      script.onerror = function () {
        script.remove();
        waiting.delete(key);
        reject(new Error("cannot load " + src));
      };
      document.head.appendChild(script);
    });
  }

  function inflate(base64) {
    var text = atob(base64);
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) {
      bytes[i] = text.charCodeAt(i);
    }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buffer) { return new Uint8Array(buffer); });
  }

  function maskTile(key, src) {
    if (!tileData.has(key)) {
      var promise = loadScript(key, src).then(function (tile) {
        return inflate(tile.base64).then(function (ids) {
          return { width: tile.width, height: tile.height, ids: ids };
        });
      });
      promise.catch(function () { tileData.delete(key); });
      tileData.set(key, promise);
    }
    return tileData.get(key);
  }

  function lookupTable() {
    var table = new Uint32Array(256);   // RGBA packed little-endian; 0 = transparent
    data.classes.forEach(function (c) {
      if (c.label !== 0 && visible[c.label]) {
        table[c.label] = ((255 << 24) | (c.color[2] << 16) | (c.color[1] << 8) | c.color[0]) >>> 0;
      }
    });
    return table;
  }

  function colour(tile) {
    var canvas = document.createElement("canvas");
    canvas.width = tile.width;
    canvas.height = tile.height;
    var context = canvas.getContext("2d");
    var image = context.createImageData(tile.width, tile.height);
    var pixels = new Uint32Array(image.data.buffer);
    var table = lookupTable();
    var ids = tile.ids;
    for (var i = 0; i < ids.length; i++) {
      pixels[i] = table[ids[i]];
    }
    context.putImageData(image, 0, 0);
    return context;
  }

  function maskSource() {
    var source = new OpenSeadragon.TileSource({
      width: pyramid.width,
      height: pyramid.height,
      tileSize: pyramid.tileSize,
      tileOverlap: pyramid.overlap,
      minLevel: 0,
      maxLevel: pyramid.maxLevel
    });
    var tag = "#v" + version;   // a new cache key whenever the colours change
    source.getTileUrl = function (level, x, y) {
      return "mask_files/" + level + "/" + x + "_" + y + ".js" + tag;
    };
    source.hasTransparency = function () { return true; };
    source.downloadTileStart = function (job) {
      var src = job.src.split("#")[0];
      var key = src.slice("mask_files/".length, -".js".length);
      maskTile(key, src).then(function (tile) {
        job.finish(colour(tile), null, "context2d");
      }, function (error) {
        job.fail(String(error), null);
      });
    };
    source.downloadTileAbort = function () {};
    return source;
  }

  function addMask() {
    var opacity = Number(document.getElementById("opacity").value) / 100;
    var old = maskItem;
    viewer.addTiledImage({
      tileSource: maskSource(),
      opacity: opacity,
      success: function (event) {
        if (old) {
          viewer.world.removeItem(old);
        }
        maskItem = event.item;
        document.body.dataset.maskVersion = String(version);
      }
    });
  }

  viewer = OpenSeadragon({
    id: "viewer",
    prefixUrl: "viewer/openseadragon/images/",
    drawer: "canvas",
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    maxZoomPixelRatio: 4,
    crossOriginPolicy: false,
    tileSources: {
      Image: {
        xmlns: "http://schemas.microsoft.com/deepzoom/2008",
        Url: "slide_files/",
        Format: pyramid.format,
        Overlap: String(pyramid.overlap),
        TileSize: String(pyramid.tileSize),
        Size: { Width: String(pyramid.width), Height: String(pyramid.height) }
      }
    }
  });

  viewer.addOnceHandler("open", addMask);
  viewer.addHandler("tile-load-failed", function (event) {
    document.body.dataset.tileErrors = String(Number(document.body.dataset.tileErrors || 0) + 1);
    console.warn("tile failed: " + event.message);
  });

  document.getElementById("opacity").addEventListener("input", function (event) {
    var value = Number(event.target.value);
    document.getElementById("opacity-value").textContent = value + "%";
    if (maskItem) {
      maskItem.setOpacity(value / 100);
    }
  });

  Array.prototype.forEach.call(document.querySelectorAll(".class-toggle"), function (box) {
    box.addEventListener("change", function () {
      visible[Number(box.dataset.label)] = box.checked;
      version += 1;
      addMask();
    });
  });

  window.wsiReview = { viewer: viewer, data: data };
})();
