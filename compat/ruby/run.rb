# The compatibility suite's Ruby driver: Postmark's official gem, configured
# with nothing but the gateway's address and a keygate key, sends the
# scenarios of the plan that e2e_sdk_test.go writes (KEYGATE_COMPAT_PLAN) and
# prints one JSON result per scenario, as compat/node/run.mjs does.
#
# Two ways Ruby applications send with it:
#   - postmark-ruby: Postmark::ApiClient#deliver with a message hash;
#   - postmark-ruby-mail: a Mail::Message delivered by the gem's Mail::Postmark
#     delivery method, which is what a Rails application's ActionMailer uses
#     with postmark-rails.
#
# It runs with Debian's ruby, ruby-postmark and ruby-mail (apt-get install
# ruby-postmark ruby-mail): the machines this project is tested on reach no
# gem index. Over HTTPS it trusts the gateway's CA through SSL_CERT_FILE, as
# Ruby's OpenSSL does for any program.

require 'json'
require 'uri'
require 'mail'
require 'postmark'

# The gem's connection settings for a base URL: it takes a host, a port and
# whether to use TLS rather than a URL.
def connection(base)
  u = URI.parse(base)
  { host: u.host, port: u.port, secure: u.scheme == 'https' }
end

def postmark_ruby(sc)
  client = Postmark::ApiClient.new(sc['key'], **connection(sc['base']))
  message = { from: sc['from'], to: sc['to'].join(', '), subject: 'compat', text_body: 'hello' }
  message[:html_body] = sc['html'] if sc['html']
  client.deliver(message)
end

def postmark_ruby_mail(sc)
  html = sc['html']
  message = Mail.new do
    from sc['from']
    to sc['to']
    subject 'compat'
    if html
      text_part { body 'hello' }
      html_part do
        content_type 'text/html; charset=UTF-8'
        body html
      end
    else
      body 'hello'
    end
  end
  message.delivery_method Mail::Postmark, api_token: sc['key'], **connection(sc['base'])
  message.deliver!
end

# A 60 KB binary attachment, the same in every run.
INVOICE = begin
  x = 1
  Array.new(60 << 10) { x = (x * 1_103_515_245 + 12_345) & 0xFFFFFFFF; x >> 24 }.pack('C*')
end

# A scenario's attachments (name, content, type, content id), or the invoice.
def files(sc)
  return [['invoice.pdf', INVOICE, 'application/pdf', nil]] unless sc['files']

  sc['files'].map { |f| [f['name'], f['content'].unpack1('m'), f['type'], f['cid']] }
end

def postmark_ruby_attachment(sc)
  client = Postmark::ApiClient.new(sc['key'], **connection(sc['base']))
  attachments = files(sc).map do |name, content, type, cid|
    { name: name, content: [content].pack('m0'), content_type: type, **(cid ? { content_id: "cid:#{cid}" } : {}) }
  end
  client.deliver(from: sc['from'], to: sc['to'].join(', '), subject: sc['subject'] || 'compat', text_body: 'hello',
                 attachments: attachments)
end

def postmark_ruby_mail_attachment(sc)
  message = Mail.new do
    from sc['from']
    to sc['to']
    subject sc['subject'] || 'compat'
    body 'hello'
  end
  files(sc).each do |name, content, type, cid|
    if cid
      message.attachments.inline[name] = { mime_type: type, content: content, content_id: "<#{cid}>" }
    else
      message.attachments[name] = { mime_type: type, content: content }
    end
  end
  message.delivery_method Mail::Postmark, api_token: sc['key'], **connection(sc['base'])
  message.deliver!
end

# A template stored at Postmark, the sender named in the request.
def postmark_ruby_template(sc)
  client = Postmark::ApiClient.new(sc['key'], **connection(sc['base']))
  client.deliver_with_template(from: sc['from'], to: sc['to'].join(', '), template_alias: 'compat',
                               template_model: { name: 'Ann' })
end

# A message to each recipient in one request (/email/batch), as
# deliver_in_batches sends them (500 a request, Postmark's largest batch).
def postmark_ruby_batch(sc)
  client = Postmark::ApiClient.new(sc['key'], **connection(sc['base']))
  client.deliver_in_batches(sc['to'].map { |to| { from: sc['from'], to: to, subject: 'compat', text_body: 'hello' } })
end

# A message to each recipient on a stored template in one request
# (/email/batchWithTemplates).
def postmark_ruby_batch_template(sc)
  client = Postmark::ApiClient.new(sc['key'], **connection(sc['base']))
  client.deliver_in_batches_with_templates(sc['to'].map do |to|
    { from: sc['from'], to: to, template_alias: 'compat', template_model: { name: 'Ann' } }
  end)
end

# What an application adds beside the addresses (an extras scenario): the
# headers of a one-click unsubscribe and a reference, reply-to addresses, a
# tag, metadata and tracking, as the gem takes them (and through the mail
# gem, as ActionMailer sets them).
EXTRA_HEADERS = { 'List-Unsubscribe' => '<mailto:unsubscribe@shop.example?subject=unsubscribe>, <https://shop.example/u/42>',
                  'List-Unsubscribe-Post' => 'List-Unsubscribe=One-Click', 'X-Entity-Ref-ID' => 'order-42' }.freeze
REPLY_TO = ['support@shop.example', 'Order Desk <orders-desk@help.example>'].freeze

def postmark_ruby_extras(sc)
  client = Postmark::ApiClient.new(sc['key'], **connection(sc['base']))
  client.deliver(from: sc['from'], to: sc['to'].join(', '), subject: 'compat', text_body: 'hello',
                 headers: EXTRA_HEADERS, reply_to: REPLY_TO.join(', '), tag: 'order', metadata: { 'order_id' => '42' },
                 track_opens: true, track_links: :html_and_text, message_stream: 'outbound')
end

def postmark_ruby_mail_extras(sc)
  message = Mail.new do
    from sc['from']
    to sc['to']
    reply_to REPLY_TO
    subject 'compat'
    body 'hello'
  end
  EXTRA_HEADERS.each { |k, v| message[k] = v }
  message.tag = 'order'
  message.metadata = { 'order_id' => '42' }
  message.track_opens = true
  message.track_links = :html_and_text
  message.delivery_method Mail::Postmark, api_token: sc['key'], **connection(sc['base'])
  message.deliver!
end

EXTRAS_DRIVERS = { 'postmark-ruby' => method(:postmark_ruby_extras),
                   'postmark-ruby-mail' => method(:postmark_ruby_mail_extras) }.freeze
DRIVERS = { 'postmark-ruby' => method(:postmark_ruby), 'postmark-ruby-mail' => method(:postmark_ruby_mail) }.freeze
TEMPLATE_DRIVERS = { 'postmark-ruby' => method(:postmark_ruby_template) }.freeze
BATCH_DRIVERS = { 'postmark-ruby' => method(:postmark_ruby_batch) }.freeze
BATCH_TEMPLATE_DRIVERS = { 'postmark-ruby' => method(:postmark_ruby_batch_template) }.freeze
ATTACHMENT_DRIVERS = { 'postmark-ruby' => method(:postmark_ruby_attachment),
                       'postmark-ruby-mail' => method(:postmark_ruby_mail_attachment) }.freeze

# What a developer sees of the gem's error: its message, class and status.
def describe(err)
  out = { 'text' => err.message, 'name' => err.class.name }
  out['status'] = err.status_code if err.respond_to?(:status_code)
  out
end

# Sends sc['sends'] times (a rate or quota scenario uses up the limit first)
# and reports the last send, or the first that failed.
def run(sc)
  t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  result = { 'id' => sc['id'] }
  begin
    drivers = if sc['batch'] && sc['template'] then BATCH_TEMPLATE_DRIVERS
              elsif sc['batch'] then BATCH_DRIVERS
              elsif sc['template'] then TEMPLATE_DRIVERS
              elsif sc['attachment'] then ATTACHMENT_DRIVERS
              elsif sc['extras'] then EXTRAS_DRIVERS
              else DRIVERS
              end
    (sc['sends'] || 1).times { drivers.fetch(sc['sdk']).call(sc) }
    result['ok'] = true
  rescue StandardError => e # every failure is a result, as in run.mjs
    result['ok'] = false
    result.merge!(describe(e))
  end
  result['ms'] = ((Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0) * 1000).to_i
  result
end

plan = JSON.parse(File.read(ENV.fetch('KEYGATE_COMPAT_PLAN')))
plan['scenarios'].each do |sc|
  puts JSON.generate(run(sc))
  $stdout.flush
end
