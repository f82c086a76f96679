'use strict';

const { factories } = require('@strapi/strapi');

module.exports = factories.createCoreRouter('api::bot-notification-setting.bot-notification-setting');
