'use strict';

const { errors } = require('@strapi/utils');

const UID = 'api::user-notification-preference.user-notification-preference';

// Postgres `integer` range: anything outside it cannot be a stored id.
const INT_MIN = -2147483648;
const INT_MAX = 2147483647;

const BAD_BY_USER = 'companyId and botId must be integers and userEmail must be set';
const MAX_BULK_USERS = 100;

// The attributes that a fallback answer carries besides company_id, bot_id and user_email,
// in the order of the content type (the stored answer has the same order).
const PREFERENCE_FIELDS = [
  'notification_enabled',
  'batch_size_threshold',
  'notification_delay_minutes',
  'email_format',
  'include_success_details',
  'include_error_details',
  // Issue 14: quiet hours, and the daily digest's fields (kb-ingest acts on the first three).
  'timezone',
  'quiet_hours_start',
  'quiet_hours_end',
  'frequency',
  'digest_hour_local',
];

const BAD_TIMEZONE = 'timezone must be an IANA time zone name such as Europe/Berlin';

/** "42" or 42 -> 42; anything that is not a whole number in int4 range -> null. */
function parseId(value) {
  if (typeof value === 'number') {
    return Number.isInteger(value) && value >= INT_MIN && value <= INT_MAX ? value : null;
  }
  if (typeof value !== 'string' || !/^-?\d{1,10}$/.test(value.trim())) {
    return null;
  }
  const n = Number(value.trim());
  return n >= INT_MIN && n <= INT_MAX ? n : null;
}

function parseEmail(value) {
  if (typeof value !== 'string') return null;
  const email = value.trim();
  return email.length > 0 && email.length <= 255 ? email : null;
}

/**
 * The IANA name of a time zone as Node's ICU spells it ("europe/berlin" -> "Europe/Berlin"),
 * or null when it is not one. kb-ingest reads it with Python's zoneinfo, which is
 * case-sensitive, so the canonical spelling is what gets stored.
 */
function canonicalTimeZone(value) {
  if (typeof value !== 'string' || value.length === 0 || value.length > 64 || value.trim() !== value) {
    return null;
  }
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: value }).resolvedOptions().timeZone;
  } catch (err) {
    return null;
  }
}

/** The defaults of the content type (schema.json is the single source of truth). */
function defaultsFor(strapi, companyId, botId, userEmail) {
  const { attributes } = strapi.contentType(UID);
  const data = { company_id: companyId, bot_id: botId, user_email: userEmail };
  for (const field of PREFERENCE_FIELDS) {
    data[field] = attributes[field] && 'default' in attributes[field] ? attributes[field].default : null;
  }
  return data;
}

/** The stored entry for (company, bot, e-mail), e-mail compared case-insensitively. */
async function findPreference(strapi, { companyId, botId, userEmail, excludeDocumentId }) {
  const filters = {
    company_id: { $eq: companyId },
    bot_id: { $eq: botId },
    user_email: { $eqi: userEmail },
  };
  if (excludeDocumentId) {
    filters.documentId = { $ne: excludeDocumentId };
  }
  return strapi.documents(UID).findFirst({ filters, sort: [{ id: 'asc' }] });
}

/**
 * Raised by the document-service middleware when a create/update would make a second entry
 * for one (company, bot, e-mail). It is an ApplicationError so that paths without our
 * controller (the admin panel's content manager) answer 400 with the message instead of 500;
 * the REST controller turns it into 409.
 */
class DuplicatePreferenceError extends errors.ApplicationError {
  constructor(message, details) {
    super(message, details);
    this.name = 'DuplicatePreferenceError';
  }
}

module.exports = {
  UID,
  BAD_BY_USER,
  BAD_TIMEZONE,
  MAX_BULK_USERS,
  PREFERENCE_FIELDS,
  canonicalTimeZone,
  parseId,
  parseEmail,
  defaultsFor,
  findPreference,
  DuplicatePreferenceError,
};
