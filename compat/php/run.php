<?php
// The compatibility suite's PHP driver: Symfony Mailer's API transports
// (what Symfony and Laravel applications send through), configured with
// nothing but a DSN naming the gateway and a keygate key, send the
// scenarios of the plan that e2e_sdk_test.go writes (KEYGATE_COMPAT_PLAN)
// and print one JSON result per scenario, as compat/node/run.mjs does.
//
// It runs with Debian's php-cli and php-symfony-*-mailer packages: the
// machines this project is tested on reach no Composer repository. The
// transports always speak HTTPS, so the suite's taps for them do too, with a
// certificate from KEYGATE_COMPAT_CAFILE.

foreach (['Mailer', 'HttpClient', 'Mime'] as $component) {
    require_once "/usr/share/php/Symfony/Component/$component/autoload.php";
}
foreach (['Sendgrid', 'Postmark', 'Mailgun', 'Mailjet', 'Sendinblue', 'Amazon'] as $bridge) {
    require_once "/usr/share/php/Symfony/Component/Mailer/Bridge/$bridge/autoload.php";
}

use Symfony\Component\HttpClient\HttpClient;
use Symfony\Component\Mailer\Exception\HttpTransportException;
use Symfony\Component\Mailer\Header\MetadataHeader;
use Symfony\Component\Mailer\Header\TagHeader;
use Symfony\Component\Mailer\Transport;
use Symfony\Component\Mime\Address;
use Symfony\Component\Mime\Email;

$plan = json_decode(file_get_contents(getenv('KEYGATE_COMPAT_PLAN')), true, 512, JSON_THROW_ON_ERROR);
$client = HttpClient::create(['cafile' => getenv('KEYGATE_COMPAT_CAFILE')]);
// A transport that makes its own client (defaultClient) trusts the taps'
// certificate through OpenSSL's default, as a machine trusting a company CA
// would.
putenv('SSL_CERT_FILE=' . getenv('KEYGATE_COMPAT_CAFILE'));

// dsn is the Symfony Mailer DSN of a scenario: the transport's scheme, the
// key where the transport takes the provider's, the gateway as the host.
function dsn(array $sc, string $mailgunDomain): string
{
    $host = parse_url($sc['base'], PHP_URL_HOST) . ':' . parse_url($sc['base'], PHP_URL_PORT);
    $key = rawurlencode($sc['key']);
    return match ($sc['sdk']) {
        'symfony-sendgrid' => "sendgrid+api://$key@$host",
        'symfony-postmark' => "postmark+api://$key@$host",
        'symfony-mailgun' => "mailgun+api://$key:" . rawurlencode($mailgunDomain) . "@$host",
        'symfony-mailjet' => "mailjet+api://$key:unused@$host",
        'symfony-brevo' => "sendinblue+api://$key@$host",
        // SES: the key is the access key id, any secret will do. ses+api
        // sends the message as fields, ses (ses+https) as raw MIME.
        'symfony-ses' => "ses+api://$key:unused@$host?region=us-east-1",
        'symfony-ses-raw' => "ses://$key:unused@$host?region=us-east-1",
    };
}

// run sends $sc['sends'] times (a rate or quota scenario uses up the limit
// first) and reports the last send, or the first that failed.
function run(array $sc, string $mailgunDomain, $client): array
{
    $t0 = microtime(true);
    $result = ['id' => $sc['id']];
    try {
        // Without a client, as plain PHP calls it, Transport::fromDsn has
        // each transport make its own; async-aws's (the SES transports')
        // retries then.
        $transport = Transport::fromDsn(dsn($sc, $mailgunDomain), null, empty($sc['defaultClient']) ? $client : null);
        if ($sc['sdk'] === 'symfony-mailjet') {
            // Symfony 5.4's Mailjet factory drops the DSN's port (the
            // others keep it); a gateway on 443 needs none.
            $transport->setPort(parse_url($sc['base'], PHP_URL_PORT));
        }
        for ($i = 0; $i < ($sc['sends'] ?? 1); $i++) {
            $email = (new Email())->from($sc['from'])->to(...$sc['to'])->subject($sc['subject'] ?? 'compat')->text('hello');
            if (!empty($sc['html'])) {
                $email->html($sc['html']);
            }
            if (!empty($sc['batch'])) {
                // Mailgun's batch send: the transport sends a header named
                // recipient-variables as that field, and Mailgun then
                // sends each address of to a message of its own.
                $email->getHeaders()->addTextHeader('recipient-variables',
                    json_encode(array_fill_keys($sc['to'], ['name' => 'Ann']), JSON_THROW_ON_ERROR));
            }
            if (!empty($sc['bcc'])) {
                $email->bcc(...$sc['bcc']);
            }
            foreach ($sc['files'] ?? [] as $f) {
                // An inline file is embedded under its content id, which
                // the HTML refers to as cid:<id>.
                if (!empty($f['cid'])) {
                    $email->embed(base64_decode($f['content']), $f['cid'], $f['type']);
                } else {
                    $email->attach(base64_decode($f['content']), $f['name'], $f['type']);
                }
            }
            if (!empty($sc['extras'])) {
                // What an application adds beside the addresses: the
                // headers of a one-click unsubscribe and a reference,
                // reply-to addresses, and Symfony's tag and metadata
                // headers, which each transport sends in its provider's
                // fields.
                // (Symfony's Mailjet transport takes one reply-to.)
                $email->replyTo(...array_slice(['support@shop.example', new Address('orders-desk@help.example', 'Order Desk')],
                    0, $sc['sdk'] === 'symfony-mailjet' ? 1 : 2));
                $email->getHeaders()
                    ->addTextHeader('List-Unsubscribe', '<mailto:unsubscribe@shop.example?subject=unsubscribe>, <https://shop.example/u/42>')
                    ->addTextHeader('List-Unsubscribe-Post', 'List-Unsubscribe=One-Click')
                    ->addTextHeader('X-Entity-Ref-ID', 'order-42')
                    ->add(new TagHeader('order'))
                    ->add(new MetadataHeader('order_id', '42'));
            }
            $transport->send($email);
        }
        $result['ok'] = true;
    } catch (Throwable $e) {
        // What a developer sees: the exception's class and message, and the
        // response it carries.
        $result['ok'] = false;
        $result['text'] = $e->getMessage();
        $result['name'] = (new ReflectionClass($e))->getShortName();
        if ($e instanceof HttpTransportException) {
            try {
                $result['status'] = $e->getResponse()->getStatusCode();
            } catch (Throwable $unreached) {
                // no response to read: the status stays unknown
            }
        }
        $result['attempts'] = 1;
    }
    $result['ms'] = (int) round((microtime(true) - $t0) * 1000);
    return $result;
}

foreach ($plan['scenarios'] as $sc) {
    echo json_encode(run($sc, $plan['mailgunDomain'], $client), JSON_UNESCAPED_SLASHES), "\n";
}
