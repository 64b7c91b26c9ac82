// The ocm-jobs web UI: job groups, their components × clusters, timeline and incompliances,
// read from the Job Manager REST API every POLL_MS while the tab is visible; stop, start and
// delete after a confirmation. Everything the API returns is rendered with textContent: no
// string ever becomes markup (the page's CSP requires Trusted Types, so it could not).
'use strict';

(() => {
  const TOKEN_KEY = 'ocm-jobs.token';
  const POLL_MS = 1500;
  // Relative to /ui/, so the UI works behind a path prefix too.
  const API = new URL('../jobmanager', document.baseURI).pathname;

  const STATES = { 1: 'Created', 2: 'Progressing', 3: 'Finished', 4: 'Degraded' };
  const TYPES = { 5: 'CreateDeployment', 6: 'DeleteDeployment', 7: 'UpdateDeployment', 8: 'ReplaceDeployment' };

  const $ = (id) => document.getElementById(id);

  // el builds an element: attrs (class, data-*, title, …) and children (nodes or text).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // The token: from a #token= fragment (which never reaches a server; it is taken out of the
  // address bar at once), else what this tab stored.
  function takeTokenFromFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (!params.has('token')) return;
    const t = params.get('token').trim();
    params.delete('token');
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
  }
  const token = () => sessionStorage.getItem(TOKEN_KEY);

  // The selected group lives in the fragment (#group=<id>), so a reload keeps it.
  function selectedGroup() {
    return new URLSearchParams(location.hash.slice(1)).get('group') || '';
  }
  function selectGroup(id) {
    const params = new URLSearchParams(location.hash.slice(1));
    if (id) params.set('group', id); else params.delete('group');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
  }

  class AuthError extends Error {}
  class APIError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path) {
    const t = token();
    if (!t) throw new AuthError('sign in with a bearer token');
    const resp = await fetch(API + path, {
      method,
      headers: { Authorization: 'Bearer ' + t, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
    const text = await resp.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = { error: text }; }
    }
    const message = (data && typeof data.error === 'string' && data.error) || (resp.status + ' ' + resp.statusText);
    if (resp.status === 401) throw new AuthError(message);
    if (!resp.ok) throw new APIError(resp.status, message);
    return { status: resp.status, data };
  }

  // Every request goes through one queue: a poll never overlaps an action, so the page never
  // reads a group in the middle of its deletion.
  let queue = Promise.resolve();
  function serial(fn) {
    const run = queue.then(fn, fn);
    queue = run.catch(() => {});
    return run;
  }

  // Views.

  function showSignIn(message) {
    $('app').hidden = true;
    $('signout').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = message || '';
    setStatus('');
    $('token').focus();
  }

  function showApp() {
    $('signin').hidden = true;
    $('app').hidden = false;
    $('signout').hidden = false;
  }

  function setStatus(text, isError) {
    const s = $('status');
    s.textContent = text;
    s.classList.toggle('error', !!isError);
  }

  const stateName = (n) => STATES[n] || (n ? 'state ' + n : 'new');
  const typeName = (n) => TYPES[n] || ('type ' + n);
  const cluster = (j) => (j.targets && j.targets.cluster_name) || '(no target)';
  const component = (j) => j.component || (j.resource && j.resource.resource_name) || j.id;

  // groupState sums a group's jobs up in one word.
  function groupState(g) {
    const jobs = g.jobs || [];
    if (jobs.length === 0) return 'Empty';
    const del = jobs.filter((j) => j.type === 6);
    if (jobs.some((j) => j.state === 4)) return 'Degraded';
    if (del.length === jobs.length && del.every((j) => j.state === 3)) return 'Stopped';
    if (del.length > 0) return 'Stopping';
    if (jobs.some((j) => j.state === 1 || j.state === 2)) return 'Deploying';
    return 'Running';
  }

  function counts(g) {
    const by = {};
    for (const j of g.jobs || []) by[stateName(j.state)] = (by[stateName(j.state)] || 0) + 1;
    return Object.entries(by).map(([s, n]) => n + ' ' + s).join(', ');
  }

  function latest(g) {
    let t = '';
    for (const j of g.jobs || []) if (j.updated_at > t) t = j.updated_at;
    return t;
  }

  function time(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleTimeString();
  }

  function ago(iso) {
    if (!iso) return '';
    const s = Math.max(0, Math.round((Date.now() - new Date(iso)) / 1000));
    if (s < 60) return s + 's ago';
    if (s < 3600) return Math.floor(s / 60) + 'm ago';
    if (s < 86400) return Math.floor(s / 3600) + 'h ago';
    return Math.floor(s / 86400) + 'd ago';
  }

  function renderGroups(groups) {
    const body = $('groups').tBodies[0];
    const sel = selectedGroup();
    groups.sort((a, b) => (latest(b) > latest(a) ? 1 : latest(b) < latest(a) ? -1 : a.id.localeCompare(b.id)));
    body.replaceChildren(...groups.map((g) => {
      const st = groupState(g);
      const row = el('tr', { 'data-group': g.id, 'data-state': st, class: g.id === sel ? 'selected' : '', tabindex: 0 },
        el('td', {}, g.appName),
        el('td', { class: 'mono', title: g.id }, g.id.slice(0, 8)),
        el('td', {}, el('span', { class: 'state s-' + st }, st), g.pending ? el('span', { class: 'pending' }, g.pending + ' pending') : null),
        el('td', {}, counts(g)),
        el('td', { title: latest(g) }, ago(latest(g))));
      const open = () => { selectGroup(g.id); serial(refresh); };
      row.addEventListener('click', open);
      row.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
      return row;
    }));
    $('groups-empty').hidden = groups.length > 0;
  }

  // lastTransition is the latest condition change of a job, else its last update.
  function lastTransition(j) {
    let t = '';
    for (const c of (j.resource && j.resource.conditions) || []) if (c.lastTransitionTime > t) t = c.lastTransitionTime;
    return t || j.updated_at;
  }

  function replicas(w) {
    const n = (v) => (v === undefined || v === null ? '–' : v);
    return el('li', { class: 'workload', 'data-workload': w.kind + '/' + w.name, 'data-desired': n(w.replicas), 'data-ready': n(w.readyReplicas) },
      el('span', { class: 'mono' }, w.kind + '/' + w.name), ' ',
      el('span', { class: 'replicas' }, 'desired ' + n(w.replicas) + ' · ready ' + n(w.readyReplicas) + ' · available ' + n(w.availableReplicas)));
  }

  function condition(c) {
    return el('li', { class: 'cond c-' + c.status, title: (c.message || '') + (c.lastTransitionTime ? ' (since ' + c.lastTransitionTime + ')' : '') },
      c.type + '=' + c.status, c.reason ? ' · ' + c.reason : '');
  }

  function cell(j) {
    const st = stateName(j.state);
    const r = j.resource || {};
    const lt = lastTransition(j);
    return el('td', { class: 'job', 'data-job': j.id, 'data-state': st, 'data-type': typeName(j.type) },
      el('div', {}, el('span', { class: 'state s-' + st }, st), ' ', el('span', { class: 'muted' }, typeName(j.type) + (j.sub_type ? ' (' + j.sub_type + ')' : ''))),
      j.move ? el('div', { class: 'pending' }, 'moving ' + j.move.from + ' → ' + j.move.to + ' (' + j.move.phase + ')') : null,
      (r.workloads || []).length ? el('ul', { class: 'workloads' }, r.workloads.map(replicas)) : null,
      (r.conditions || []).length ? el('ul', { class: 'conds' }, r.conditions.map(condition)) : null,
      el('div', { class: 'muted small', title: lt }, 'last transition ' + ago(lt)));
  }

  function renderMatrix(g) {
    const jobs = g.jobs || [];
    const comps = [...new Set(jobs.map(component))];
    const clusters = [...new Set(jobs.map(cluster))].sort();
    const table = $('matrix');
    table.tHead.replaceChildren(el('tr', {}, el('th', {}, 'component'), clusters.map((c) => el('th', { 'data-cluster': c }, c))));
    table.tBodies[0].replaceChildren(...comps.map((comp) => el('tr', { 'data-component': comp },
      el('th', {}, comp),
      clusters.map((cl) => {
        const j = jobs.find((x) => component(x) === comp && cluster(x) === cl);
        return j ? cell(j) : el('td', { class: 'empty' }, '–');
      }))));
  }

  function renderTimeline(g, activity) {
    const byID = Object.fromEntries((g.jobs || []).map((j) => [j.id, j]));
    const where = (id) => (byID[id] ? component(byID[id]) + ' @ ' + cluster(byID[id]) : id.slice(0, 8));
    const entries = (activity.history || []).slice(0, 200);
    $('timeline').replaceChildren(...entries.map((e) => el('li', { 'data-action': e.action, 'data-job': e.job_id },
      el('time', { datetime: e.at, title: e.at }, time(e.at)), ' ',
      el('span', { class: 'where' }, where(e.job_id)), ' ',
      el('span', { class: 'action' }, e.action), ' ',
      e.from !== e.to ? el('span', {}, stateName(e.from) + ' → ' + stateName(e.to)) : el('span', { class: 'muted' }, stateName(e.to)),
      el('div', { class: 'muted small' }, 'by ' + e.by + (e.why ? ' — ' + e.why : '')))));
  }

  function renderIncompliances(g, activity) {
    const byID = Object.fromEntries((g.jobs || []).map((j) => [j.id, j]));
    const list = activity.incompliances || [];
    const raw = (v) => (v === undefined || v === null ? '–' : typeof v === 'string' ? v : JSON.stringify(v));
    $('incompliances').tBodies[0].replaceChildren(...list.map((inc) => {
      const j = byID[inc.job_id];
      let done = inc.reason || '';
      if (j) {
        // What the remediation job did since the incompliance came in.
        const since = (activity.history || []).filter((e) => e.job_id === j.id && (!inc.received_at || new Date(e.at) >= new Date(inc.received_at)));
        const steps = since.slice(0, 3).reverse().map((e) => e.action + (e.why ? ' (' + e.why + ')' : '')).join(' → ');
        done = component(j) + ' @ ' + cluster(j) + ': ' + typeName(j.type) + (j.sub_type ? ' ' + j.sub_type : '') +
          ', ' + stateName(j.state) + (steps ? ' — ' + steps : '') + (inc.reason ? ' — ' + inc.reason : '');
      }
      return el('tr', { 'data-incompliance': inc.id, 'data-outcome': inc.outcome || '' },
        el('td', { title: inc.received_at || '' }, time(inc.received_at)),
        el('td', {}, inc.policyName, inc.subject && inc.subject.appComponent ? el('div', { class: 'muted small' }, inc.subject.appComponent) : null),
        el('td', {}, raw(inc.currentValue) + ' / ' + raw(inc.threshold)),
        el('td', {}, inc.remediation),
        el('td', {}, el('span', { class: 'outcome o-' + (inc.outcome || 'pending') }, inc.outcome || 'pending')),
        el('td', {}, done));
    }));
    $('incompliances-empty').hidden = list.length > 0;
  }

  function renderGroup(g, activity) {
    const st = groupState(g);
    $('group').hidden = false;
    $('group').dataset.group = g.id;
    $('group').dataset.state = st;
    $('group-name').textContent = g.appName;
    $('group-state').textContent = st;
    $('group-state').className = 'state s-' + st;
    $('group-pending').textContent = g.pending ? g.pending + ' pending: carried out once the jobs being executed end' : '';
    $('group-meta').textContent = 'group ' + g.id + (g.appDescription ? ' · ' + g.appDescription : '') +
      (g.policy_manager ? ' · Policy Manager: ' + g.policy_manager.state : '');
    renderMatrix(g);
    renderTimeline(g, activity);
    renderIncompliances(g, activity);
  }

  // refresh reads the groups and the selected group; one at a time (serial).
  async function refresh() {
    if (!token()) {
      if ($('signin').hidden) showSignIn('');
      return;
    }
    try {
      const { data: groups } = await api('GET', '/groups');
      showApp();
      const list = Array.isArray(groups) ? groups : [];
      let sel = selectedGroup();
      if (sel && !list.some((g) => g.id === sel)) { selectGroup(''); sel = ''; }
      renderGroups(list);
      if (sel) {
        const [{ data: g }, { data: activity }] = await Promise.all([
          api('GET', '/groups/' + encodeURIComponent(sel)),
          api('GET', '/groups/' + encodeURIComponent(sel) + '/activity'),
        ]);
        renderGroup(g, activity || {});
      } else {
        $('group').hidden = true;
      }
      setStatus('updated ' + new Date().toLocaleTimeString());
    } catch (err) {
      if (err instanceof AuthError) {
        sessionStorage.removeItem(TOKEN_KEY);
        showSignIn('The token was refused: ' + err.message);
      } else if (err instanceof APIError && err.status === 404 && selectedGroup()) {
        selectGroup(''); // deleted meanwhile
        $('group').hidden = true;
      } else {
        setStatus('could not update: ' + err.message, true);
      }
    }
  }

  // Actions, each after a confirmation.

  function confirmAction(text, ok) {
    const dlg = $('confirm');
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = ok;
    return new Promise((resolve) => {
      const done = (yes) => () => {
        $('confirm-ok').onclick = null;
        $('confirm-cancel').onclick = null;
        dlg.onclose = null;
        if (dlg.open) dlg.close();
        resolve(yes);
      };
      $('confirm-ok').onclick = done(true);
      $('confirm-cancel').onclick = done(false);
      dlg.onclose = done(false); // Escape
      dlg.showModal();
    });
  }

  const ACTIONS = {
    stop: { method: 'PUT', path: (id) => '/groups/stop/' + id, ok: 'Stop',
      text: (g) => 'Stop ' + g + '? Every deployed component is undeployed from its cluster (its ManifestWork is deleted). It can be started again.' },
    start: { method: 'PUT', path: (id) => '/groups/start/' + id, ok: 'Start',
      text: (g) => 'Start ' + g + ' again? Every stopped component is deployed to its cluster.' },
    delete: { method: 'DELETE', path: (id) => '/groups/' + id, ok: 'Delete',
      text: (g) => 'Delete ' + g + '? Its record and history leave the Job Manager. Only a stopped group can be deleted.' },
  };

  async function act(name) {
    const id = $('group').dataset.group;
    if (!id) return;
    const a = ACTIONS[name];
    const label = $('group-name').textContent + ' (' + id.slice(0, 8) + ')';
    const result = $('action-result');
    if (!(await confirmAction(a.text(label), a.ok))) {
      result.textContent = name + ' cancelled';
      result.className = 'muted';
      return;
    }
    await serial(async () => {
      try {
        const { status, data } = await api(a.method, a.path(encodeURIComponent(id)));
        result.className = 'ok';
        if (name === 'delete') {
          result.textContent = 'deleted ' + id;
          selectGroup('');
        } else {
          result.textContent = status === 202
            ? name + ' accepted: carried out once the jobs being executed end (' + ((data && data.pending) || name) + ' pending)'
            : name + ' done';
        }
      } catch (err) {
        if (err instanceof AuthError) {
          sessionStorage.removeItem(TOKEN_KEY);
          showSignIn('The token was refused: ' + err.message);
          return;
        }
        result.className = 'error';
        result.textContent = name + ' refused: ' + err.message;
      }
      await refresh();
    });
  }

  // Polling: every POLL_MS while the tab is visible, at once when it becomes visible again.
  let timer = 0;
  function schedule() {
    clearTimeout(timer);
    if (document.visibilityState !== 'visible') return;
    timer = setTimeout(() => serial(refresh).finally(schedule), POLL_MS);
  }

  function start() {
    takeTokenFromFragment();
    $('signin-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const t = $('token').value.trim();
      $('token').value = '';
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      serial(refresh).finally(schedule);
    });
    $('signout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      selectGroup('');
      showSignIn('Signed out.');
    });
    for (const name of Object.keys(ACTIONS)) $('action-' + name).addEventListener('click', () => act(name));
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') serial(refresh).finally(schedule);
      else clearTimeout(timer);
    });
    window.addEventListener('hashchange', () => { takeTokenFromFragment(); serial(refresh); });
    serial(refresh).finally(schedule);
  }

  start();
})();
