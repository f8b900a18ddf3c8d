# -*- test-case-name: estwisted.projections.test.test_js -*-
"""
The JavaScript run inside V8 before a user projection's query: the v5
projection API (C{fromAll}, C{fromStream}, C{fromStreams},
C{fromCategory}, C{when}, C{foreachStream}, C{partitionBy},
C{outputState}, C{transformBy}, C{filterBy}, C{emit}, C{linkTo},
C{copyTo}, C{linkStreamTo}, C{options}) and the entry points the engine
calls (C{__es_*}).  Written for estwisted after v5's documented
semantics.

The runtime keeps every loaded partition's state in the isolate; the
engine hands it batches of events and reads states back at checkpoints.
"""

PRELUDE = r"""
"use strict";
var __es = (function () {
  var sources = {
    allStreams: false, allEvents: true, byStreams: false, byCustomPartitions: false,
    categories: [], streams: [], events: [],
    options: {
      definesStateTransform: false, handlesDeletedNotifications: false,
      producesResults: false, definesFold: false, resultStreamName: null,
      partitionResultStreamNamePattern: null, $includeLinks: false,
      reorderEvents: false, processingLag: 0, biState: false
    }
  };
  var typed = {};
  var anyHandlers = [];
  var deletedHandlers = [];
  var createdHandlers = [];
  var transforms = [];
  var defaultHandler = true;
  var initState = function () { return {}; };
  var initShared = function () { return {}; };
  var partitioner = null;
  var states = {};
  var shared = null;
  var out = null;
  var logs = [];
  var current = -1;

  function onHandlers(h) {
    for (var name in h) {
      var f = h[name];
      if (typeof f !== "function") throw "handler " + name + " is not a function";
      if (name === "$init") { initState = f; sources.options.definesFold = true; }
      else if (name === "$initShared") {
        initShared = f; sources.options.biState = true; sources.options.definesFold = true;
      }
      else if (name === "$any") {
        anyHandlers.push(f); defaultHandler = false; sources.allEvents = true;
        sources.options.definesFold = true;
      }
      else if (name === "$deleted") {
        deletedHandlers.push(f); sources.options.handlesDeletedNotifications = true;
        sources.options.definesFold = true;
      }
      else if (name === "$created") { createdHandlers.push(f); sources.options.definesFold = true; }
      else {
        typed[name] = f; defaultHandler = false;
        if (anyHandlers.length === 0) sources.allEvents = false;
        sources.events.push(name); sources.options.definesFold = true;
      }
    }
  }
  function results() {
    return { transformBy: transformBy, filterBy: filterBy, outputState: outputState,
             outputTo: outputTo };
  }
  function transformBy(f) {
    transforms.push(f);
    sources.options.definesStateTransform = true; sources.options.producesResults = true;
    return results();
  }
  function filterBy(f) {
    return transformBy(function (s) { return f(s) ? s : null; });
  }
  function outputState() { sources.options.producesResults = true; return results(); }
  function outputTo(stream, pattern) {
    sources.options.definesStateTransform = true; sources.options.producesResults = true;
    sources.options.resultStreamName = stream;
    sources.options.partitionResultStreamNamePattern = pattern || null;
  }
  function when(h) {
    onHandlers(h);
    return { transformBy: transformBy, filterBy: filterBy, outputState: outputState,
             outputTo: outputTo };
  }
  function foreachStream() { sources.byStreams = true; return { when: when }; }
  function partitionBy(f) {
    if (typeof f !== "function") throw "partitionBy needs a function";
    partitioner = f; sources.byCustomPartitions = true; return { when: when };
  }
  function selector(withStreams) {
    var s = { partitionBy: partitionBy, when: when, outputState: outputState };
    if (withStreams) s.foreachStream = foreachStream;
    return s;
  }
  var api = {
    fromAll: function () { sources.allStreams = true; return selector(true); },
    fromCategory: function (c) { sources.categories.push(String(c)); return selector(true); },
    fromCategories: function (cs) {
      var a = Array.isArray(cs) ? cs : Array.prototype.slice.call(arguments);
      for (var i = 0; i < a.length; i++) sources.categories.push(String(a[i]));
      return selector(true);
    },
    fromStream: function (s) { sources.streams.push(String(s)); return selector(false); },
    fromStreams: function (ss) {
      var a = Array.isArray(ss) ? ss : Array.prototype.slice.call(arguments);
      for (var i = 0; i < a.length; i++) sources.streams.push(String(a[i]));
      return selector(false);
    },
    options: function (o) {
      for (var k in o) {
        if (sources.options[k] === undefined) throw "Unrecognized option: " + k;
        sources.options[k] = o[k];
      }
    },
    emit: function (stream, type, body, metadata) {
      push({ streamId: String(stream), eventType: String(type), body: JSON.stringify(body),
             isJson: true, metadata: metadata || null });
    },
    linkTo: function (stream, ev, metadata) {
      push({ streamId: String(stream), eventType: "$>",
             body: ev.sequenceNumber + "@" + ev.streamId, isJson: false,
             metadata: metadata || null });
    },
    linkStreamTo: function (stream, linked, metadata) {
      push({ streamId: String(stream), eventType: "$@", body: String(linked),
             isJson: false, metadata: metadata || null });
    },
    copyTo: function (stream, ev, metadata) {
      var m = {};
      var em = ev.metadata;
      if (em) for (var a in em) if (a.indexOf("$") !== 0 || a === "$correlationId") m[a] = em[a];
      if (metadata) for (var b in metadata) if (b.indexOf("$") !== 0) m[b] = metadata[b];
      push({ streamId: String(stream), eventType: ev.eventType, body: ev.bodyRaw,
             isJson: ev.isJson, metadata: m });
    },
    log: function (m) {
      if (logs.length < 100) logs.push(typeof m === "string" ? m : JSON.stringify(m));
    }
  };
  function push(e) {
    if (out === null) throw "emit is only allowed while handling an event";
    if (!e.streamId) throw "emit needs a stream name";
    out.push(e);
  }

  function Envelope(r, partition) {
    this.isJson = !!r.j;
    this.bodyRaw = r.d;
    this.body = null;
    this.data = null;
    this.eventType = r.t;
    this.streamId = r.s;
    this.sequenceNumber = r.n;
    this.metadataRaw = r.m;
    this.linkMetadataRaw = r.lm;
    this.partition = partition;
    this.category = r.c;
    this.eventId = r.id;
    this.created = r.ts;
    if (this.isJson) {
      try {
        this.body = r.d === "" ? {} : JSON.parse(r.d);
        this.data = this.body;
      } catch (ex) {
        this.jsonError = String(ex); this.body = undefined; this.data = undefined;
      }
    }
  }
  Object.defineProperty(Envelope.prototype, "metadata", { get: function () {
    if (this._m === undefined) {
      try { this._m = this.metadataRaw ? JSON.parse(this.metadataRaw) : {}; }
      catch (ex) { this._m = {}; }
    }
    return this._m;
  }});
  Object.defineProperty(Envelope.prototype, "linkMetadata", { get: function () {
    if (this._lm === undefined) {
      try { this._lm = this.linkMetadataRaw ? JSON.parse(this.linkMetadataRaw) : {}; }
      catch (ex) { this._lm = {}; }
    }
    return this._lm;
  }});

  function call(f, state, ev) {
    var s = f(state, ev);
    return s === undefined ? state : s;
  }
  function stateOf(p) {
    if (!Object.prototype.hasOwnProperty.call(states, p)) states[p] = initState();
    return states[p];
  }
  function sharedState() {
    if (shared === null) shared = initShared();
    return shared;
  }
  function partitionOf(r) {
    if (sources.byStreams) return r.s;
    if (partitioner === null) return "";
    var p = partitioner(new Envelope(r, ""));
    return (p === undefined || p === null || p === "") ? "" : String(p);
  }
  function processOne(r, p) {
    var ev = new Envelope(r, p);
    var bi = sources.options.biState;
    var s = bi ? [stateOf(p), sharedState()] : stateOf(p);
    if (r.del) {
      var note = { partition: p, isSoftDeleted: false, streamId: r.s };
      for (var k = 0; k < deletedHandlers.length; k++) s = call(deletedHandlers[k], s, note);
    } else {
      if (defaultHandler) s = ev.isJson ? ev.body : { $e: ev.bodyRaw };
      for (var i = 0; i < anyHandlers.length; i++) s = call(anyHandlers[i], s, ev);
      var h = typed[r.t];
      if (h !== undefined) s = call(h, s, ev);
    }
    if (bi) {
      if (!Array.isArray(s)) throw "a bi-state handler must return [state, sharedState]";
      states[p] = s[0]; shared = s[1];
    } else {
      states[p] = s;
    }
  }

  return {
    api: api,
    sources: function () { return JSON.stringify(sources); },
    handles: function (t) {
      return defaultHandler || anyHandlers.length > 0 || typed[t] !== undefined;
    },
    partitions: function (batch) {
      var rs = JSON.parse(batch), ps = [];
      for (var i = 0; i < rs.length; i++) { current = i; ps.push(partitionOf(rs[i])); }
      current = -1;
      return JSON.stringify(ps);
    },
    load: function (json) {
      var loaded = JSON.parse(json);
      for (var p in loaded) {
        var v = loaded[p];
        if (v === null) states[p] = initState();
        else states[p] = JSON.parse(v);
      }
      return "OK";
    },
    loadShared: function (v) {
      shared = v === null ? initShared() : JSON.parse(v);
      return "OK";
    },
    process: function (batch, partitions) {
      var rs = JSON.parse(batch), ps = JSON.parse(partitions), emits = [];
      logs = [];
      for (var i = 0; i < rs.length; i++) {
        current = i;
        out = [];
        try {
          processOne(rs[i], ps[i]);
        } catch (ex) {
          var msg = (ex && ex.stack) ? String(ex.stack) : String(ex);
          out = null; current = -1;
          return JSON.stringify({ done: i, error: msg, emits: emits, logs: logs });
        }
        emits.push(out);
        out = null;
      }
      current = -1;
      return JSON.stringify({ done: rs.length, error: null, emits: emits, logs: logs });
    },
    current: function () { return current; },
    states: function (ps) {
      var want = JSON.parse(ps), got = {};
      for (var i = 0; i < want.length; i++) {
        var p = want[i];
        got[p] = Object.prototype.hasOwnProperty.call(states, p)
          ? JSON.stringify(states[p]) : null;
      }
      return JSON.stringify(got);
    },
    shared: function () {
      return sources.options.biState ? JSON.stringify(sharedState()) : null;
    },
    results: function (ps) {
      var want = JSON.parse(ps), got = {};
      for (var i = 0; i < want.length; i++) {
        var p = want[i];
        var r = Object.prototype.hasOwnProperty.call(states, p) ? states[p] : null;
        for (var k = 0; k < transforms.length && r !== null; k++) {
          r = transforms[k](r);
          if (r === undefined) r = null;
        }
        got[p] = r === null ? null : JSON.stringify(r);
      }
      return JSON.stringify(got);
    },
    forget: function (ps) {
      var drop = JSON.parse(ps);
      for (var i = 0; i < drop.length; i++) delete states[drop[i]];
      return "OK";
    }
  };
})();
var fromAll = __es.api.fromAll, fromCategory = __es.api.fromCategory,
  fromCategories = __es.api.fromCategories, fromStream = __es.api.fromStream,
  fromStreams = __es.api.fromStreams, options = __es.api.options, emit = __es.api.emit,
  linkTo = __es.api.linkTo, linkStreamTo = __es.api.linkStreamTo, copyTo = __es.api.copyTo,
  log = __es.api.log;
"""
