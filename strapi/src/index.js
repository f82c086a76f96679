'use strict';

const { errors } = require('@strapi/utils');
const {
  UID: PREFERENCE_UID,
  BAD_TIMEZONE,
  canonicalTimeZone,
  parseId,
  parseEmail,
  findPreference,
  DuplicatePreferenceError,
} = require('./api/user-notification-preference/utils/preferences');

const WEBHOOK_NAME = 'kb-ingest';
const DEFAULT_EVENTS = 'entry.create,entry.update,entry.delete';

/**
 * One preference per (company, bot, e-mail), e-mail compared case-insensitively. Checked in a
 * document-service middleware so every path (REST, admin panel, scripts) is covered.
 * Note: a check-then-insert, not a database constraint; two simultaneous creates of the
 * same key could both pass.
 */
function registerPreferenceUniqueness(strapi) {
  strapi.documents.use(async (context, next) => {
    if (context.uid !== PREFERENCE_UID || !['create', 'update'].includes(context.action)) {
      return next();
    }
    const data = (context.params && context.params.data) || {};
    let key = data;
    let excludeDocumentId;
    if (context.action === 'update') {
      excludeDocumentId = context.params.documentId;
      const touchesKey = ['company_id', 'bot_id', 'user_email'].some((f) => f in data);
      if (!touchesKey || !excludeDocumentId) {
        return next();
      }
      const current = await strapi.documents(PREFERENCE_UID).findOne({ documentId: excludeDocumentId });
      if (!current) {
        return next();
      }
      key = { ...current, ...data };
    }
    const companyId = parseId(key.company_id);
    const botId = parseId(key.bot_id);
    const userEmail = parseEmail(key.user_email);
    // Invalid values are left to Strapi's own validation (400).
    if (companyId !== null && botId !== null && userEmail !== null) {
      const existing = await findPreference(strapi, { companyId, botId, userEmail, excludeDocumentId });
      if (existing) {
        throw new DuplicatePreferenceError(
          'A preference for this company, bot and e-mail already exists',
          { documentId: existing.documentId, company_id: companyId, bot_id: botId, user_email: existing.user_email }
        );
      }
    }
    return next();
  });
}

/**
 * A preference's timezone must be an IANA name (400 otherwise, on REST and in the admin
 * panel); it is stored as ICU spells it, so kb-ingest's case-sensitive zoneinfo finds it.
 * An empty or null timezone means the default, UTC.
 */
function registerTimeZoneCheck(strapi) {
  strapi.documents.use(async (context, next) => {
    if (context.uid !== PREFERENCE_UID || !['create', 'update'].includes(context.action)) {
      return next();
    }
    const data = (context.params && context.params.data) || {};
    if (!('timezone' in data)) {
      return next();
    }
    if (data.timezone === null || data.timezone === '') {
      data.timezone = 'UTC';
      return next();
    }
    const canonical = canonicalTimeZone(data.timezone);
    if (canonical === null) {
      throw new errors.ValidationError(BAD_TIMEZONE, { path: ['timezone'] });
    }
    data.timezone = canonical;
    return next();
  });
}

/**
 * Create or update the webhook named "kb-ingest" from the environment, so no one has to click
 * it together in the admin panel. Without KB_INGEST_WEBHOOK_URL nothing is touched.
 */
async function syncKbIngestWebhook(strapi) {
  const url = (process.env.KB_INGEST_WEBHOOK_URL || '').trim();
  if (!url) {
    strapi.log.info('[kb-ingest] KB_INGEST_WEBHOOK_URL not set: webhook left as it is');
    return;
  }
  const token = process.env.KB_INGEST_WEBHOOK_TOKEN || '';
  const store = strapi.get('webhookStore');
  const runner = strapi.get('webhookRunner');

  const events = (process.env.KB_INGEST_WEBHOOK_EVENTS || DEFAULT_EVENTS)
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean);
  const allowed = new Set(store.listAllowedEvents ? store.listAllowedEvents().map((k) => store.getAllowedEvent(k)) : []);
  const unknown = allowed.size ? events.filter((e) => !allowed.has(e)) : [];
  if (unknown.length) {
    throw new Error(`[kb-ingest] KB_INGEST_WEBHOOK_EVENTS has unknown events: ${unknown.join(', ')}`);
  }

  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const wanted = { name: WEBHOOK_NAME, url, headers, events, isEnabled: true };

  const existing = (await store.findWebhooks()).filter((w) => w.name === WEBHOOK_NAME);
  if (existing.length === 0) {
    const created = await store.createWebhook(wanted);
    runner.add(created);
    strapi.log.info(`[kb-ingest] webhook created (id ${created.id}) -> ${url} for ${events.join(', ')}`);
    return;
  }
  const [first, ...extra] = existing;
  const updated = await store.updateWebhook(first.id, wanted);
  runner.update(updated);
  for (const w of extra) {
    // Two webhooks with our name would deliver every event twice.
    await store.deleteWebhook(w.id);
    runner.remove(w);
  }
  strapi.log.info(`[kb-ingest] webhook updated (id ${updated.id}) -> ${url} for ${events.join(', ')}`);
}

module.exports = {
  register({ strapi }) {
    registerPreferenceUniqueness(strapi);
    registerTimeZoneCheck(strapi);
  },

  async bootstrap({ strapi }) {
    await syncKbIngestWebhook(strapi);
  },
};
